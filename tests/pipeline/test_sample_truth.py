"""Every op checked on the real sample against shipped truth or an independent numpy computation."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from rasterio.transform import from_bounds

from eoflow.cube.build import build_stac_cube
from eoflow.geo.tiles import Tile
from eoflow.ops.indices import normalized_difference
from eoflow.ops.masks import valid_count, valid_mask
from eoflow.ops.temporal import interpolate_to_grid
from eoflow.reference.rasterize import open_reference, rasterize_tile
from eoflow.sources.stac import search_items

BOUNDS = (465181.0522318204, 5079244.8912012065, 466180.53145382757, 5080254.63349641)


@pytest.fixture(scope="module")
def patch_tile() -> Tile:
    return Tile(
        "patch", "EPSG:32633", tuple(from_bounds(*BOUNDS, width=100, height=101))[:6], 100, 101
    )


@pytest.fixture(scope="module")
def full_cube(sample_dir, patch_tile):
    items = search_items(
        str(sample_dir / "collection.json"), start=dt.date(2015, 1, 1), end=dt.date(2017, 12, 31)
    )
    assert len(items.items) == 68
    return build_stac_cube(
        items, patch_tile, assets=["NDVI", "CLM", "IS_DATA", "B04", "B08"], chunk_px=40
    )


def test_cube_keeps_native_dtypes_and_grid(full_cube, patch_tile):
    assert full_cube["NDVI"].dtype == np.float32
    assert full_cube["CLM"].dtype == np.uint8
    assert full_cube.rio.crs.to_epsg() == 32633
    assert tuple(full_cube.rio.transform())[:6] == pytest.approx(patch_tile.transform)
    assert full_cube.sizes == {"time": 68, "y": 101, "x": 100}
    assert full_cube["NDVI"].data.chunksize == (68, 40, 40)


def test_ndvi_from_bands_equals_shipped_ndvi(full_cube):
    has_bands = full_cube["B04"].notnull().any(("y", "x")).values
    assert has_bands.sum() == 10
    sub = full_cube.isel(time=np.flatnonzero(has_bands))
    ours = normalized_difference(sub["B08"], sub["B04"]).values
    shipped = sub["NDVI"].values
    both = np.isfinite(ours)
    assert both.sum() > 0.5 * both.size
    np.testing.assert_array_equal(ours[both], shipped[both])


def test_valid_count_equals_shipped(full_cube, sample_truth):
    vc = valid_count(valid_mask(full_cube, how="clm")).values
    np.testing.assert_array_equal(vc, sample_truth["VALID_COUNT"])


def test_rasterised_reference_equals_shipped_lulc(sample_dir, patch_tile, sample_truth):
    ref = open_reference(str(sample_dir / "reference" / "LULC.gpkg"))
    lulc = rasterize_tile(ref, patch_tile, chunk_px=32).values
    np.testing.assert_array_equal(lulc, sample_truth["LULC"])


def test_interpolation_at_observed_dates_returns_observations(full_cube):
    sub = full_cube.isel(y=slice(0, 30), x=slice(0, 30))
    valid = valid_mask(sub, how="clm")
    grid = sub["time"].values
    out = interpolate_to_grid(sub["NDVI"], valid, grid).values
    obs = sub["NDVI"].values
    m = valid.values
    np.testing.assert_allclose(out[m], obs[m], rtol=0, atol=1e-7)


def test_timestamps_carried_from_items(full_cube, sample_dir):
    items = json.loads((sample_dir / "items" / "20170101T100407" / "item.json").read_text())
    assert (
        np.datetime64(items["properties"]["datetime"].rstrip("Z"), "ns") in full_cube["time"].values
    )


def test_stac_digital_numbers_become_reflectance_in_the_features(sample_dir, patch_tile, tmp_path):
    """A uint16 asset with ``raster:bands`` scale/offset keeps its DN in the cube and its
    attributes, and the feature kernel reads it back as the real reflectance."""
    import rasterio

    from eoflow.ops.indices import reflectance
    from eoflow.sources.stac import ItemSet

    items = []
    for src_item in sorted(sample_dir.glob("items/2015071*/item.json"))[:2]:
        item = json.loads(src_item.read_text())
        with rasterio.open(src_item.parent / "B04.tif") as src:
            refl, profile = src.read(1), src.profile
        dn = np.where(np.isfinite(refl), np.round((refl + 0.1) * 1e4), 0).astype(np.uint16)
        out = tmp_path / f"{item['id']}-B04.tif"
        profile.update(dtype="uint16", nodata=0)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(dn, 1)
        asset = dict(item["assets"]["B04"], href=str(out))
        asset["raster:bands"] = [
            {"data_type": "uint16", "nodata": 0, "scale": 1e-4, "offset": -0.1}
        ]
        items.append({**item, "assets": {"B04": asset}})
    cube = build_stac_cube(ItemSet(tuple(items), {}, "test"), patch_tile, assets=["B04"])
    assert cube["B04"].dtype == np.uint16
    assert cube["B04"].attrs["scale"] == 1e-4 and cube["B04"].attrs["offset"] == -0.1
    got = reflectance(cube["B04"]).values
    want = (cube["B04"].values.astype(np.float32) / np.float32(1e4)) - np.float32(0.1)
    want[cube["B04"].values == 0] = np.nan
    np.testing.assert_array_equal(got, want)
    assert np.nanmax(np.abs(got - (cube["B04"].values * 1e-4 - 0.1))) < 1e-6
