"""One pass per spatial chunk: indices, validity and masked interpolation of every feature.

The chunk is read once; each image row is transposed into a small time-contiguous buffer (fits in
cache), and every pixel's valid observation times are gathered once per feature. Nothing of size
``(time, y, x)`` is materialised besides the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numba
import numpy as np
import xarray as xr

from eoflow.ops.indices import INDEX_BANDS
from eoflow.ops.temporal import _to_days

__all__ = ["FeatureRecipe", "fused_features", "interpolate_features", "recipes_for"]

COPY, NORM_DIFF = 0, 1


@dataclass(frozen=True)
class FeatureRecipe:
    """How a feature is made from cube variables: a copy or ``(a - b) / (a + b)``."""

    name: str
    kind: int
    a: str
    b: str | None = None


def recipes_for(ds: xr.Dataset, indices: list[str], bands: list[str]) -> list[FeatureRecipe]:
    """Recipes for the indices whose bands exist (an index present in ``ds`` is copied) and bands."""
    out = []
    for name in indices:
        if name in ds:
            out.append(FeatureRecipe(name, COPY, name))
        elif all(b in ds for b in INDEX_BANDS[name]):
            out.append(FeatureRecipe(name, NORM_DIFF, *INDEX_BANDS[name]))
    out.extend(FeatureRecipe(b, COPY, b) for b in bands if b in ds)
    return out


@numba.njit(cache=True, nogil=True)
def fused_features(src, mask, kind, ia, ib, src_t, dst_t):
    """Features of one chunk.

    ``src`` (n_src, t, h, w) float32, ``mask`` (t, h, w) bool, ``kind``/``ia``/``ib`` (n_feat,)
    recipes, ``src_t`` (t,) and ``dst_t`` (k,) increasing float64 days. Returns
    ``(n_feat * k + 1, h, w)`` float32: each feature's interpolated series, then the number of
    valid observations. Non-finite values never count; outside the valid range the nearest valid
    value is held; no valid observation gives NaN.
    """
    n_src, t, h, w = src.shape
    n_feat, k = kind.shape[0], dst_t.shape[0]
    out = np.empty((n_feat * k + 1, h, w), dtype=np.float32)
    buf = np.empty((n_src, w, t), dtype=np.float32)
    mbuf = np.empty((w, t), dtype=np.bool_)
    tt = np.empty(t, dtype=np.float64)
    tv = np.empty(t, dtype=np.float64)
    for y in range(h):
        for s in range(n_src):
            for i in range(t):
                for x in range(w):
                    buf[s, x, i] = src[s, i, y, x]
        for i in range(t):
            for x in range(w):
                mbuf[x, i] = mask[i, y, x]
        for x in range(w):
            cnt = 0
            for i in range(t):
                if mbuf[x, i]:
                    cnt += 1
            out[n_feat * k, y, x] = cnt
            for f in range(n_feat):
                m = 0
                for i in range(t):
                    if not mbuf[x, i]:
                        continue
                    a = buf[ia[f], x, i]
                    if kind[f] == COPY:
                        v = a
                    else:
                        b = buf[ib[f], x, i]
                        s_ = a + b
                        v = (a - b) / s_ if s_ != 0 else np.float32(np.nan)
                    if np.isfinite(v):
                        tt[m] = src_t[i]
                        tv[m] = v
                        m += 1
                base = f * k
                if m == 0:
                    for q in range(k):
                        out[base + q, y, x] = np.nan
                    continue
                j = 0
                for q in range(k):
                    g = dst_t[q]
                    if g <= tt[0]:
                        out[base + q, y, x] = tv[0]
                    elif g >= tt[m - 1]:
                        out[base + q, y, x] = tv[m - 1]
                    else:
                        while tt[j + 1] < g:
                            j += 1
                        wgt = (g - tt[j]) / (tt[j + 1] - tt[j])
                        out[base + q, y, x] = tv[j] + wgt * (tv[j + 1] - tv[j])
    return out


def _fused_block(mask, *arrays, **kw):
    """One chunk: stack the bands as float32 (one copy) and run the kernel."""
    src = np.empty((len(arrays), *mask.shape), dtype=np.float32)
    for i, a in enumerate(arrays):
        src[i] = a
    return fused_features(src, np.ascontiguousarray(mask), **kw)


def interpolate_features(
    ds: xr.Dataset, valid: xr.DataArray, recipes: list[FeatureRecipe], grid: np.ndarray
) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """Lazy interpolated features (float32, ``time = grid``) and ``N_OBS`` (uint16), one task per chunk.

    ``ds`` and ``valid`` hold only the frames to use (any order).
    """
    order = np.argsort(ds["time"].values, kind="stable")
    ds, valid = ds.isel(time=order), valid.isel(time=order)
    names = sorted({r.a for r in recipes} | {r.b for r in recipes if r.b})
    index = {n: i for i, n in enumerate(names)}
    arrays = [ds[n].data.rechunk({0: -1}) for n in names]
    mask = valid.data.rechunk({0: -1})
    kind = np.array([r.kind for r in recipes], np.int64)
    ia = np.array([index[r.a] for r in recipes], np.int64)
    ib = np.array([index[r.b] if r.b else 0 for r in recipes], np.int64)
    k = len(grid)
    planes = len(recipes) * k + 1
    out = da.map_blocks(
        _fused_block, mask, *arrays, kind=kind, ia=ia, ib=ib, src_t=_to_days(ds["time"].values),
        dst_t=_to_days(grid), dtype=np.float32, chunks=((planes,), *mask.chunks[1:]),
    )  # fmt: skip
    coords = {"time": grid, "y": ds["y"], "x": ds["x"]}
    feats = {
        r.name: xr.DataArray(
            out[f * k : (f + 1) * k], dims=("time", "y", "x"), coords=coords, name=r.name
        )
        for f, r in enumerate(recipes)
    }
    n_obs = xr.DataArray(
        out[-1].astype(np.uint16), dims=("y", "x"), coords={"y": ds["y"], "x": ds["x"]}
    )
    return feats, n_obs.rename("N_OBS")
