"""Time-axis operations: frame filtering and masked interpolation onto a regular grid."""

from __future__ import annotations

import datetime as dt

import numpy as np
import xarray as xr

__all__ = ["clm_frame_fraction", "frame_valid_fraction", "interpolate_to_grid", "regular_grid"]

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


def _clm_counts_block(clm: np.ndarray, is_data: np.ndarray | None = None) -> np.ndarray:
    from eoflow.ops._kernels import clm_frame_counts  # numba: on the workers only

    flag = is_data is not None
    counts = clm_frame_counts(np.ascontiguousarray(clm),
                              np.ascontiguousarray(is_data) if flag else clm, flag)  # fmt: skip
    return counts[:, None, None]


def clm_frame_fraction(ds: xr.Dataset) -> xr.DataArray:
    """:func:`frame_valid_fraction` for the CLM rule (``IS_DATA & ~CLM`` over ``IS_DATA``'s
    footprint; without ``IS_DATA`` every pixel has data), counted in one pass per chunk: equal
    to ``frame_valid_fraction(valid_mask(ds, how="clm"), footprint)``, without its six
    elementwise passes and temporaries (this runs before every tile's graph can be built)."""
    import dask.array as da

    clm = ds["CLM"].data
    clm = clm if isinstance(clm, da.Array) else da.from_array(clm, chunks=-1)
    clm = clm.rechunk({0: -1})
    args = [clm]
    if "IS_DATA" in ds:
        is_data = ds["IS_DATA"].data
        is_data = is_data if isinstance(is_data, da.Array) else da.from_array(is_data, chunks=-1)
        args.append(is_data.rechunk(clm.chunks))
    t = clm.shape[0]
    counts = da.map_blocks(
        _clm_counts_block, *args, dtype=np.int64,
        chunks=((t + 1,), (1,) * len(clm.chunks[1]), (1,) * len(clm.chunks[2])),
        meta=np.empty((0, 0, 0), np.int64),
    ).sum(axis=(1, 2))  # fmt: skip
    frac = counts[:t].astype(np.float32) / da.maximum(counts[t], 1).astype(np.float32)
    return xr.DataArray(frac, dims=("time",), coords={"time": ds["time"]}, name="VALID_FRACTION")


def _to_days(t: np.ndarray) -> np.ndarray:
    return (t.astype("datetime64[ns]").astype(np.int64) / _NS_PER_DAY).astype(np.float64)


def _interp_block(values, valid, src_t, dst_t):
    shape = values.shape[:-1]
    v = np.ascontiguousarray(values.reshape(-1, values.shape[-1]), dtype=np.float32)
    m = np.ascontiguousarray(valid.reshape(-1, valid.shape[-1]))
    from eoflow.ops._kernels import interp_masked  # numba: on the workers only

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
