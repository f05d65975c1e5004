"""Time-axis operations: frame filtering and masked interpolation onto a regular grid."""

from __future__ import annotations

import datetime as dt

import numpy as np
import xarray as xr

from eoflow.ops._kernels import interp_masked

__all__ = ["frame_valid_fraction", "interpolate_to_grid", "regular_grid"]

_NS_PER_DAY = 86_400 * 10**9


def regular_grid(start: dt.date, end: dt.date, step_days: int) -> np.ndarray:
    """Midnight instants ``start + k * step_days`` up to ``end`` (inclusive), ``datetime64[ns]``."""
    s, e = np.datetime64(start, "ns"), np.datetime64(end, "ns")
    n = int((e - s) // np.timedelta64(step_days, "D")) + 1
    return s + np.arange(n) * np.timedelta64(step_days, "D").astype("timedelta64[ns]")


def frame_valid_fraction(valid: xr.DataArray, footprint: xr.DataArray) -> xr.DataArray:
    """Valid fraction of each frame over the tile's data footprint (lazy, ``(time,)`` float32).

    The denominator is the number of pixels with data in any frame, so tiles that only partly
    cover the data are judged on their covered part; on a fully covered tile it equals
    eo-learn's ``ValidDataFractionPredicate``.
    """
    n = footprint.sum().astype("float32")
    return (valid.sum(("y", "x")).astype("float32") / np.maximum(n, 1)).rename("VALID_FRACTION")


def _to_days(t: np.ndarray) -> np.ndarray:
    return (t.astype("datetime64[ns]").astype(np.int64) / _NS_PER_DAY).astype(np.float64)


def _interp_block(values, valid, src_t, dst_t):
    shape = values.shape[:-1]
    v = np.ascontiguousarray(values.reshape(-1, values.shape[-1]), dtype=np.float32)
    m = np.ascontiguousarray(valid.reshape(-1, valid.shape[-1]))
    out, _ = interp_masked(v, m, src_t, dst_t)
    return out.reshape((*shape, dst_t.shape[0]))


def interpolate_to_grid(da: xr.DataArray, valid: xr.DataArray, grid: np.ndarray) -> xr.DataArray:
    """Masked linear interpolation of ``da`` over its valid observations onto ``grid``.

    Outside the first/last valid observation the nearest valid value is held; pixels with no
    valid observation are NaN. Lazy, one task per spatial chunk (time is a core dim).

    Returns
    -------
    xarray.DataArray
        float32, dims ``time, y, x`` with ``time = grid``.
    """
    order = np.argsort(da["time"].values, kind="stable")
    if not np.array_equal(order, np.arange(order.size)):  # input order must not matter
        da, valid = da.isel(time=order), valid.isel(time=order)
    if da.chunks is not None and len(da.chunks[da.get_axis_num("time")]) > 1:
        da = da.chunk({"time": -1})
    if valid.chunks is not None and len(valid.chunks[valid.get_axis_num("time")]) > 1:
        valid = valid.chunk({"time": -1})
    src_t = _to_days(da["time"].values)
    dst_t = _to_days(grid)
    out = xr.apply_ufunc(
        _interp_block, da, valid,
        input_core_dims=[["time"], ["time"]], output_core_dims=[["t_grid"]],
        kwargs={"src_t": src_t, "dst_t": dst_t}, dask="parallelized",
        output_dtypes=[np.float32], dask_gufunc_kwargs={"output_sizes": {"t_grid": len(grid)}},
    )  # fmt: skip
    out = out.rename(t_grid="time").assign_coords(time=grid).transpose("time", ...)
    return out.rename(da.name)
