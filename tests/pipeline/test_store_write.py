"""``write_tile``: the lazy writer (one task per spatial chunk) writes what xarray's to_zarr does."""

from __future__ import annotations

import json
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from eoflow.cube.model import make_cube
from eoflow.cube.store import write_tile
from eoflow.geo.tiles import Tile


def _tile_ds() -> xr.Dataset:
    rng = np.random.default_rng(3)
    t, h, w = 5, 12, 10
    feat = rng.random((t, h, w), dtype=np.float32)
    feat[1, 2, 3] = np.nan
    tile = Tile("t01", "EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0), w, h)
    times = np.datetime64("2017-01-01", "ns") + np.arange(t) * np.timedelta64(15, "D")
    ds = make_cube(
        {
            "F": da.from_array(feat, chunks=(t, 5, 4)),
            "DN": da.from_array(
                rng.integers(0, 9000, (t, h, w), dtype=np.uint16), chunks=(t, 5, 4)
            ),
            "L": da.from_array(rng.integers(0, 4, (h, w), dtype=np.uint16), chunks=(5, 4)),
        },
        tile=tile,
        time=times,
        attrs={"DN": {"scale": 1e-4, "offset": 0.0}},
    )
    ds.attrs["frames_kept"] = ["a", "b"]
    return ds


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_lazy_write_equals_xarray_to_zarr(tmp_path):
    ds = _tile_ds()
    lazy = write_tile(ds, tmp_path / "a.zarr", "t01", compute=False)
    assert lazy is not None
    dask.compute(lazy)
    write_tile(ds, tmp_path / "b.zarr", "t01", compute=True)  # xarray's own to_zarr
    # the whole store: the tile's group, every chunk, and the root group to_zarr creates
    a, b = _files(tmp_path / "a.zarr"), _files(tmp_path / "b.zarr")
    assert sorted(a) == sorted(b) and "zarr.json" in a  # every chunk written, nothing else
    for name in a:
        if name.endswith("zarr.json"):
            assert json.loads(a[name]) == json.loads(b[name]), name
        else:
            assert a[name] == b[name], name
    got = xr.open_zarr(tmp_path / "a.zarr", group="t01", consolidated=False, decode_coords="all")
    xr.testing.assert_identical(got.compute(), ds.compute().drop_encoding())


def test_lazy_write_is_one_task_per_spatial_chunk(tmp_path):
    ds = _tile_ds()
    lazy = write_tile(ds, tmp_path / "a.zarr", "t01", compute=False)
    names = [k for k in dict(lazy.__dask_graph__()) if str(k).startswith("_store_block")]
    assert len(names) == 3 * 3  # y: 5+5+2, x: 4+4+2
