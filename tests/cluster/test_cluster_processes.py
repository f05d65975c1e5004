"""A synthetic-cube reduction through real `dask scheduler` / `dask worker` processes."""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest

from eoflow.geo.tiles import Tile
from eoflow.sources.synthetic import synthetic_cube

pytestmark = pytest.mark.cluster


def _reductions():
    """Valid count and mean NDVI per pixel for two adjacent tiles (lazy)."""
    out = []
    for col in (0, 1):
        tile = Tile(f"t{col}", "EPSG:32633",
                    (10.0, 0.0, 460000.0 + col * 960, 0.0, -10.0, 5100000.0), 96, 96)  # fmt: skip
        ds = synthetic_cube(tile, start="2021-05-01", end="2021-07-01", chunks={"y": 48, "x": 48})
        valid = (ds["CLM"] == 0) & (ds["IS_DATA"] == 1)
        nir, red = ds["B08"].astype("float32"), ds["B04"].astype("float32")
        ndvi = ((nir - red) / (nir + red)).where(valid)
        out += [valid.sum("time").data, ndvi.mean("time").data]
    return out


def test_processes_equal_local_threads(dask_processes):
    from distributed import Client

    local = dask.compute(*_reductions(), scheduler="threads")
    with Client(dask_processes, timeout="30s") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        remote = client.compute(_reductions(), sync=True)
        processed = client.run(lambda dask_worker: len(dask_worker.data))
    assert set(processed) == set(pids)
    for a, b in zip(local, remote, strict=True):
        np.testing.assert_array_equal(a, b)
    assert local[0].dtype == np.int64 and local[1].dtype == np.float32
