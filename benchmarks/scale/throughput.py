"""Measure the per-core compute throughput that ``eoflow plan`` uses for its runtime estimate.

``python -m benchmarks.scale.throughput`` builds one SYNTHETIC block (the full time series of a
256 x 256 px block, one year every 5 days, 6 bands + masks), then times, on one thread
(``scheduler="synchronous"``), what the per-block stages do to it: validity mask (CLM/IS_DATA),
NDVI/NDWI/NDBI, masked interpolation of the three indices onto a 15-day grid, and the valid count.
Generation of the synthetic data (a stand-in for decoding COGs) is timed separately. The result
(pixel-dates per second per core) is printed as JSON; copy it into
``eoflow.plan.THROUGHPUT_PIXEL_DATES_PER_S_PER_CORE`` with the date and machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time

import dask
import numpy as np

from eoflow.geo.tiles import Tile
from eoflow.ops.indices import add_indices
from eoflow.ops.masks import valid_count, valid_mask
from eoflow.ops.temporal import interpolate_to_grid, regular_grid
from eoflow.sources.synthetic import synthetic_cube

__all__ = ["measure"]

_START, _END = dt.date(2021, 1, 1), dt.date(2021, 12, 31)


def _tile(size: int) -> Tile:
    return Tile(
        "32633_bench", "EPSG:32633", (10.0, 0.0, 460000.0, 0.0, -10.0, 5100000.0), size, size
    )


def _features(cube, grid):
    valid = valid_mask(cube)
    ds, names = add_indices(cube, ["NDVI", "NDWI", "NDBI"])
    outs = [interpolate_to_grid(ds[n], valid, grid) for n in names]
    return [*outs, valid_count(valid)]


def measure(size: int = 256, repeats: int = 3) -> dict:
    """Time generation and per-block features on one thread; return a JSON-able record."""
    grid = regular_grid(_START, _END, 15)
    with dask.config.set(scheduler="synchronous"):
        cube = synthetic_cube(_tile(size), start=_START, end=_END, chunks={"y": size, "x": size})
        pixel_dates = size * size * cube.sizes["time"]
        t0 = time.perf_counter()
        cube = cube.persist()
        gen_s = time.perf_counter() - t0
        dask.compute(*_features(cube, grid))  # warm-up (numba compile / cache load)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            dask.compute(*_features(cube, grid))
            runs.append(time.perf_counter() - t0)
    feat_s = float(np.median(runs))
    return {
        "block": [cube.sizes["time"], size, size],
        "pixel_dates": pixel_dates,
        "generate_s": round(gen_s, 3),
        "features_s": round(feat_s, 3),
        "generate_pixel_dates_per_s_per_core": round(pixel_dates / gen_s),
        "features_pixel_dates_per_s_per_core": round(pixel_dates / feat_s),
        "end_to_end_pixel_dates_per_s_per_core": round(pixel_dates / (gen_s + feat_s)),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cpus": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ"),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
