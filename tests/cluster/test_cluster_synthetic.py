"""The synthetic source: lazy, deterministic whatever the chunking, and Sentinel-2-like."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from eoflow.cube.model import validate_cube
from eoflow.geo.tiles import Tile
from eoflow.sources.synthetic import (
    SYNTHETIC_CLASSES,
    synthetic_cube,
    synthetic_dates,
    synthetic_reference,
)

H, W = 40, 52
TILE = Tile("32633_t", "EPSG:32633", (10.0, 0.0, 465000.0, 0.0, -10.0, 5080000.0), W, H)
PERIOD = {"start": "2021-04-01", "end": "2021-07-15", "revisit_days": 5}


class CountingScheduler:
    """A Dask scheduler that counts how often it is asked to compute (xarray's idiom)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture(scope="module")
def whole() -> dict[str, np.ndarray]:
    """The tile computed as one chunk (the reference for every chunking)."""
    ds = synthetic_cube(TILE, **PERIOD, chunks={"time": -1, "y": -1, "x": -1})
    out = {k: v.values for k, v in ds.compute(scheduler="synchronous").data_vars.items()}
    out["reference"] = synthetic_reference(TILE).compute(scheduler="synchronous").values
    return out


@settings(max_examples=8, deadline=None, phases=(Phase.explicit, Phase.generate), database=None)
@given(t=st.integers(4, 22), y=st.integers(6, H), x=st.integers(6, W))
def test_identical_values_whatever_the_chunking(whole, t, y, x):
    ds = synthetic_cube(TILE, **PERIOD, chunks={"time": t, "y": y, "x": x})
    assert ds["B04"].data.chunksize == (min(t, ds.sizes["time"]), y, x)
    got = ds.compute(scheduler="synchronous")
    for name, arr in got.data_vars.items():
        np.testing.assert_array_equal(arr.values, whole[name], err_msg=name)
    ref = synthetic_reference(TILE, chunks={"y": y, "x": x}).compute(scheduler="synchronous")
    np.testing.assert_array_equal(ref.values, whole["reference"])


def test_neighbouring_tiles_agree_on_shared_pixels(whole):
    """A tile that is a window of another (offset 7 rows, 11 cols) holds the same pixels."""
    a, _, c, _, e, f = TILE.transform
    inner = Tile("32633_u", TILE.crs, (a, 0.0, c + 11 * a, 0.0, e, f + 7 * e), 20, 15)
    got = synthetic_cube(inner, **PERIOD, chunks={"y": 8, "x": 8}).compute(scheduler="sync")
    np.testing.assert_array_equal(got["B08"].values, whole["B08"][:, 7:22, 11:31])
    np.testing.assert_array_equal(got["SCL"].values, whole["SCL"][:, 7:22, 11:31])


def test_building_computes_nothing():
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        big = Tile("32633_big", "EPSG:32633", (10.0, 0, 400000.0, 0, -10.0, 5200000.0), 5000, 5000)
        ds = synthetic_cube(big, start="2021-01-01", end="2021-12-31", chunks={"y": 500, "x": 500})
        ref = synthetic_reference(big, chunks={"y": 500, "x": 500})
        ndvi = (ds["B08"].astype("float32") - ds["B04"]) / (ds["B08"] + ds["B04"])
        _ = ndvi.where(ds["CLM"] == 0).mean("time")
    assert counter.calls == 0
    # one generator task per chunk: 10 x 10 spatial blocks, time whole
    stacked = ds["B04"].data.dask.layers
    gen = [k for k in stacked if k.startswith("synthetic-s2-")]
    assert len(gen) == 1 and len(stacked[gen[0]]) == 100
    assert ref.data.npartitions == 100


def test_contract_labels_and_dtypes(whole):
    ds = synthetic_cube(TILE, **PERIOD)
    validate_cube(ds)
    assert ds.attrs["synthetic"] is True and "SYNTHETIC" in ds.attrs["source"]
    assert ds.attrs["tile_id"] == TILE.tile_id and ds.rio.crs.to_epsg() == 32633
    for b in ("B02", "B03", "B04", "B08", "B11", "B12"):
        assert ds[b].dtype == np.uint16
        assert ds[b].attrs == {"nodata": 0, "scale": 1e-4, "offset": -0.1}
    for m in ("CLM", "IS_DATA", "SCL"):
        assert ds[m].dtype == np.uint8
    np.testing.assert_array_equal(ds["time"].values, synthetic_dates(**PERIOD))
    ref = synthetic_reference(TILE)
    assert ref.dtype == np.uint8 and ref.dims == ("y", "x") and ref.attrs["synthetic"] is True
    assert set(np.unique(whole["reference"])) <= {c["id"] for c in SYNTHETIC_CLASSES}


def test_masks_are_consistent(whole):
    clm, is_data, scl = whole["CLM"], whole["IS_DATA"], whole["SCL"]
    np.testing.assert_array_equal(clm == 1, np.isin(scl, (8, 9)))
    np.testing.assert_array_equal(is_data == 0, scl == 0)
    bands = np.stack([whole[b] for b in ("B02", "B03", "B04", "B08", "B11", "B12")])
    np.testing.assert_array_equal((bands == 0).all(0), is_data == 0)
    assert not (bands == 0).any(0)[is_data == 1].any()
    assert set(np.unique(scl)) <= {0, 3, 4, 5, 6, 8, 9}


@pytest.fixture(scope="module")
def year():
    """A year of a 128 px tile, computed once."""
    tile = Tile("32633_y", "EPSG:32633", (10.0, 0, 460000.0, 0, -10.0, 5100000.0), 128, 128)
    ds = synthetic_cube(tile, start="2021-01-01", end="2021-12-31", chunks={"y": 64, "x": 64})
    return ds.compute(), synthetic_reference(tile).values


def test_clouds_shadows_and_nodata_occur(year):
    """Over a year every ingredient shows up."""
    ds, _ = year
    scl = ds["SCL"].values
    frac = {code: float((scl == code).mean()) for code in (0, 3, 8, 9)}
    assert all(v > 0.005 for v in frac.values()), frac
    assert 0.1 < float(ds["CLM"].mean()) < 0.6
    clear = (scl > 0) & (scl != 3) & (ds["CLM"].values == 0)
    assert clear.mean() > 0.4


def test_seasonal_ndvi_of_cultivated_land(year):
    """Clear cultivated pixels: NDVI in July well above April (class 1 peaks in early July)."""
    ds, ref = year
    red = ds["B04"].values * 1e-4 - 0.1
    nir = ds["B08"].values * 1e-4 - 0.1
    ndvi = (nir - red) / (nir + red)
    ok = (ds["CLM"].values == 0) & (ds["SCL"].values != 3) & (ds["IS_DATA"].values == 1)
    crop = ok & (ref == 1)[None]
    month = ds["time"].dt.month.values
    assert crop[month == 4].sum() > 100 and crop[month == 7].sum() > 100
    early = ndvi[month == 4][crop[month == 4]].mean()
    late = ndvi[month == 7][crop[month == 7]].mean()
    assert late > early + 0.3, (early, late)


def test_seed_changes_everything_and_bad_bands_fail():
    a = synthetic_reference(TILE, seed=0).values
    b = synthetic_reference(TILE, seed=1).values
    assert (a != b).mean() > 0.3
    from eoflow.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown bands"):
        synthetic_cube(TILE, **PERIOD, bands=("B04", "B99"))
    with pytest.raises(ConfigError, match="no acquisition"):
        synthetic_cube(TILE, start="2021-01-01", end="2021-01-02", revisit_days=5)
