"""`eoflow run` with local GeoTIFF/COG files and a dated GeoPackage raster stack as the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENES = ROOT / "data" / "gpkg" / "scenes"


def _config(tmp: Path, source: dict) -> Path:
    cfg = {
        "name": f"local-{source['kind']}",
        "aoi": {"path": str(ROOT / "data" / "sample" / "aoi.geojson")},
        "start": "2015-01-01",
        "end": "2017-12-31",
        "grid": {"tile_size_px": 34, "res_m": [9.99479222007154, 9.997449824699109],
                 "origin": [465181.0522318204, 5080254.63349641], "chunk_px": 34},
        "source": source,
        "reference": {"path": str(ROOT / "data" / "sample" / "reference" / "LULC.gpkg")},
        "features": {"valid_from": "clm", "indices": ["NDVI"], "step_days": 90, "min_valid_fraction": 0.0},
        "model": {"n_estimators": 20},
        "cluster": {"n_workers": 1, "threads_per_worker": 2},
    }  # fmt: skip
    path = tmp / f"{source['kind']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "eoflow.cli.main", "run", str(config), "--out", str(out),
                           "--until", "features", "--quiet"], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def geotiff_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geotiff")
    _run(_config(tmp, {"kind": "geotiff", "paths": str(SCENES / "*.tif")}), tmp / "out")
    return tmp / "out"


def test_geotiff_source_gives_the_real_values(geotiff_run):
    import rasterio

    cube = xr.open_zarr(geotiff_run / "cube.zarr", group="32633_0_-1", consolidated=False)
    assert [str(t)[:10] for t in cube["time"].values] == [
        "2015-07-11",
        "2016-06-05",
        "2017-05-01",
        "2017-10-13",
    ]
    with rasterio.open(SCENES / "S2_20170501_NDVI.tif") as src:
        direct = src.read(1)[:34, :34]
    np.testing.assert_array_equal(cube["NDVI"].isel(time=2).values, direct)


def test_gpkg_source_equals_geotiff_source(geotiff_run, tmp_path):
    from eoflow.cli.main import main

    gpkg = tmp_path / "scenes.gpkg"
    assert main(["export", "rasters", str(SCENES), "--out", str(gpkg)]) == 0
    out = tmp_path / "out"
    _run(_config(tmp_path, {"kind": "gpkg", "path": str(gpkg)}), out)
    for tid in ("32633_0_-1", "32633_2_-3"):
        a = xr.open_zarr(geotiff_run / "features.zarr", group=tid, consolidated=False)
        b = xr.open_zarr(out / "features.zarr", group=tid, consolidated=False)
        np.testing.assert_array_equal(a["NDVI"].values, b["NDVI"].values)
        np.testing.assert_array_equal(a["VALID_COUNT"].values, b["VALID_COUNT"].values)


def test_synthetic_source_and_reference_run_the_pipeline(tmp_path):
    """The clearly labelled synthetic source runs every stage like any other source."""
    from eoflow.geo.tiles import Tile
    from eoflow.sources.synthetic import synthetic_reference

    cfg = {
        "name": "synthetic", "aoi": {"bbox": [14.50, 46.00, 14.512, 46.008]},
        "start": "2021-01-01", "end": "2021-12-31", "grid": {"tile_size_px": 64, "chunk_px": 32},
        "source": {"kind": "synthetic", "revisit_days": 15, "seed": 3}, "reference": {"kind": "synthetic"},
        "model": {"n_estimators": 10}, "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False},
    }  # fmt: skip
    path = tmp_path / "syn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "eoflow.cli.main", "run", str(path), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SYNTHETIC" in (out / "report.html").read_text()
    tiles = json.loads((out / "tiles.json").read_text())
    tid, info = next(iter(tiles.items()))
    feats = xr.open_zarr(out / "features.zarr", group=tid, consolidated=False)
    tile = Tile.from_dict(info)
    np.testing.assert_array_equal(feats["LULC"].values, synthetic_reference(tile, 3).values)
