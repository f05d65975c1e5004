"""Fixtures for the GeoPackage / local-raster tests: real files from ``data/reference`` and
``data/gpkg/scenes`` (eo-learn example data, see their READMEs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasterio.transform import from_bounds

from eoflow.geo.tiles import Tile

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "data" / "reference"
SCENES = ROOT / "data" / "gpkg" / "scenes"
LULC = REF / "LULC.gpkg"
PARCELS = REF / "import-gpkg-test.gpkg"
TIFF1 = REF / "import-tiff-test1.tiff"
TIFF2 = REF / "import-tiff-test2.tiff"
#: TestEOPatch grid (EPSG:32633, 100 x 101 px).
PATCH_TRANSFORM = from_bounds(465181.0522318204, 5079244.8912012065, 466180.53145382757,
                              5080254.63349641, width=100, height=101)  # fmt: skip
SCENE_DATES = ["2015-07-11", "2016-06-05", "2017-05-01", "2017-10-13"]


@pytest.fixture(scope="session")
def patch_tile() -> Tile:
    """The TestEOPatch grid as a Tile."""
    return Tile("patch", "EPSG:32633", tuple(PATCH_TRANSFORM)[:6], 100, 101)


@pytest.fixture(scope="session")
def scene_cube(patch_tile):
    """The NDVI + CLM scenes as a lazy cube (4 dates)."""
    from eoflow.sources.geotiff import load_geotiff_cube

    return load_geotiff_cube(SCENES, tile=patch_tile, chunks={"y": 64, "x": 64})


@pytest.fixture(scope="session")
def dated_gpkg(tmp_path_factory, scene_cube) -> Path:
    """A dated raster GeoPackage written by ``eoflow export rasters`` from the scenes."""
    from eoflow.cli.main import main

    out = tmp_path_factory.mktemp("gpkg") / "scenes.gpkg"
    assert main(["export", "rasters", str(SCENES), "--out", str(out)]) == 0
    return out
