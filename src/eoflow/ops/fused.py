"""One pass per spatial chunk: indices, validity and masked interpolation of every feature.

The chunk is read once; each image row is transposed into a small time-contiguous buffer (fits in
cache), and every pixel's valid observation times and interpolation weights are found once for
all its features. Nothing of size ``(time, y, x)`` is materialised besides the inputs (not even
a copy of the kept frames).
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
def _hold_or_lerp(out, base, y, x, tt, tv, m, dst_t):
    """Interpolate one pixel's ``m`` observations ``(tt, tv)`` onto ``dst_t`` (general path)."""
    j = 0
    for q in range(dst_t.shape[0]):
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


@numba.njit(cache=True, nogil=True)
def fused_features(srcs, mask, frames, kind, ia, ib, src_t, dst_t):
    """Features of one chunk.

    ``srcs`` a tuple of (t, h, w) float32 arrays, ``mask`` (t, h, w) bool, ``frames`` (n,) the
    frames to use in time order, ``kind``/``ia``/``ib`` (n_feat,) recipes, ``src_t`` (n,) and
    ``dst_t`` (k,) increasing float64 days. Returns ``(n_feat * k + 1, h, w)`` float32: each
    feature's interpolated series, then the number of valid observations. Non-finite values never
    count; outside the valid range the nearest valid value is held; no valid observation gives NaN.

    Each image row is transposed into a small time-contiguous buffer (fits in cache). A pixel's
    valid frames and its interpolation weights are found once and shared by every feature whose
    values are all finite there (the usual case); a feature with a non-finite value at a valid
    frame takes the general path over its own finite observations.
    """
    n_src, t = len(srcs), frames.shape[0]
    h, w = mask.shape[1], mask.shape[2]
    n_feat, k = kind.shape[0], dst_t.shape[0]
    out = np.empty((n_feat * k + 1, h, w), dtype=np.float32)
    buf = np.empty((n_src, w, t), dtype=np.float32)
    mbuf = np.empty((w, t), dtype=np.bool_)
    vi = np.empty(t, dtype=np.int64)
    jq = np.empty(k, dtype=np.int64)
    wq = np.empty(k, dtype=np.float64)
    tt = np.empty(t, dtype=np.float64)
    tv = np.empty(t, dtype=np.float64)
    for y in range(h):
        for s in range(n_src):
            a = srcs[s]
            for i in range(t):
                fi = frames[i]
                for x in range(w):
                    buf[s, x, i] = a[fi, y, x]
        for i in range(t):
            fi = frames[i]
            for x in range(w):
                mbuf[x, i] = mask[fi, y, x]
        for x in range(w):
            m = 0
            for i in range(t):
                if mbuf[x, i]:
                    vi[m] = i
                    m += 1
            out[n_feat * k, y, x] = m
            if m == 0:
                for p in range(n_feat * k):
                    out[p, y, x] = np.nan
                continue
            # shared weights: -1 holds the first observation, -2 the last
            j = 0
            t_first, t_last = src_t[vi[0]], src_t[vi[m - 1]]
            for q in range(k):
                g = dst_t[q]
                if g <= t_first:
                    jq[q] = -1
                elif g >= t_last:
                    jq[q] = -2
                else:
                    while src_t[vi[j + 1]] < g:
                        j += 1
                    jq[q] = j
                    t0 = src_t[vi[j]]
                    wq[q] = (g - t0) / (src_t[vi[j + 1]] - t0)
            for f in range(n_feat):
                all_finite = True
                for r in range(m):
                    i = vi[r]
                    a = buf[ia[f], x, i]
                    if kind[f] == COPY:
                        v = a
                    else:
                        b = buf[ib[f], x, i]
                        s_ = a + b
                        v = (a - b) / s_ if s_ != 0 else np.float32(np.nan)
                    tv[r] = v
                    if not np.isfinite(v):
                        all_finite = False
                base = f * k
                if all_finite:
                    for q in range(k):
                        jj = jq[q]
                        if jj == -1:
                            out[base + q, y, x] = tv[0]
                        elif jj == -2:
                            out[base + q, y, x] = tv[m - 1]
                        else:
                            out[base + q, y, x] = tv[jj] + wq[q] * (tv[jj + 1] - tv[jj])
                    continue
                mm = 0
                for r in range(m):
                    if np.isfinite(tv[r]):
                        tt[mm] = src_t[vi[r]]
                        tv[mm] = tv[r]
                        mm += 1
                if mm == 0:
                    for q in range(k):
                        out[base + q, y, x] = np.nan
                else:
                    _hold_or_lerp(out, base, y, x, tt, tv, mm, dst_t)
    return out


def _fused_block(mask, *arrays, **kw):
    """One chunk: the bands as float32 (a copy only for other dtypes), then the kernel."""
    srcs = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)
    return fused_features(srcs, np.ascontiguousarray(mask), **kw)


def interpolate_features(
    ds: xr.Dataset,
    valid: xr.DataArray,
    recipes: list[FeatureRecipe],
    grid: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """Lazy interpolated features (float32, ``time = grid``) and ``N_OBS`` (uint16), one task per chunk.

    ``frames`` (integer positions along ``time``, default all) are the frames to use, in any
    order; the others are never copied, the kernel skips them.
    """
    times = ds["time"].values
    frames = np.arange(times.size) if frames is None else np.asarray(frames, dtype=np.int64)
    frames = frames[np.argsort(times[frames], kind="stable")]
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
        _fused_block, mask, *arrays, frames=frames, kind=kind, ia=ia, ib=ib,
        src_t=_to_days(times[frames]), dst_t=_to_days(grid), dtype=np.float32,
        chunks=((planes,), *mask.chunks[1:]),
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
