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


def test_features_sliced_from_one_block_are_written_without_slicing_tasks(tmp_path):
    """Variables that are slices of one kernel block (as the fused features are) reach the write
    and the sampler as that block, sliced there: no per-variable ``getitem`` task (Dask's would
    copy each slice), the same bytes and samples."""
    from eoflow.stages.sample import sample_dataset

    rng = np.random.default_rng(5)
    t, h, w = 4, 12, 10
    block = da.from_array(rng.random((2 * t, h, w), dtype=np.float32), chunks=(2 * t, 6, 5))
    block = block.map_blocks(lambda b: b * 2, dtype=np.float32)  # a computed block, as the kernel's
    tile = Tile("t02", "EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0), w, h)
    times = np.datetime64("2017-01-01", "ns") + np.arange(t) * np.timedelta64(15, "D")
    labels = da.from_array(rng.integers(0, 3, (h, w), dtype=np.uint16), chunks=(6, 5))
    ds = make_cube({"A": block[:t], "B": block[t:], "LULC_ERODED": labels}, tile=tile, time=times)
    ds.attrs["features"] = ["A", "B"]
    lazy = write_tile(ds, tmp_path / "a.zarr", "t02", compute=False)
    sampled = sample_dataset(ds, "t02", fraction=0.5, exclude=[0], seed=1)
    for out in (lazy, sampled):
        graph = dict(out.__dask_graph__())
        needed, todo = set(), [out.key]
        while todo:  # every task the output depends on
            key = todo.pop()
            if key not in needed:
                needed.add(key)
                todo += list(dask.core.get_dependencies(graph, key))
        assert not [k for k in needed if "getitem" in str(k)]
    dask.compute(lazy)
    write_tile(ds, tmp_path / "b.zarr", "t02", compute=True)
    a, b = _files(tmp_path / "a.zarr"), _files(tmp_path / "b.zarr")
    assert {k: v for k, v in a.items() if "zarr.json" not in k} == {
        k: v for k, v in b.items() if "zarr.json" not in k
    }
    got = sampled.compute()
    full = np.stack([ds["A"].values, ds["B"].values], axis=-1)  # (t, y, x, feature)
    np.testing.assert_array_equal(got["X"], full[:, got["row"], got["col"], :].transpose(1, 0, 2))
