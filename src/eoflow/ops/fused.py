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

from eoflow.ops.indices import INDEX_BANDS, dn_reading
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
def fused_features(srcs, n_f, dns, n_dn, dn_inv, dn_off, dn_nodata, mask, frames, kind, ia, ib,
                   src_t, dst_t):  # fmt: skip
    """Features of one chunk.

    ``srcs`` a tuple of (t, h, w) float32 arrays of which the first ``n_f`` are sources
    ``0..n_f-1``, ``dns`` a tuple of (t, h, w) uint16 digital numbers of which the first ``n_dn``
    are sources ``n_f...`` (each tuple holds one unused dummy when it has none), read as
    ``float32(dn) / dn_inv + dn_off`` (NaN where ``dn == dn_nodata``, a negative nodata meaning
    none); ``mask`` (t, h, w) bool, ``frames`` (n,) the frames to use in time order,
    ``kind``/``ia``/``ib`` (n_feat,) recipes, ``src_t`` (n,) and ``dst_t`` (k,) increasing float64
    days. Returns ``(n_feat * k + 2, h, w)`` float32: each feature's interpolated series, the
    number of valid observations among ``frames``, then among all frames of ``mask``. Non-finite
    values never count; outside the valid range the nearest valid value is held; no valid
    observation gives NaN.

    Each image row of the kept frames is copied into a small buffer (fits in cache), converting
    digital numbers on the way (no float32 copy of a uint16 band), and every normalised
    difference is computed there once per frame, so each feature is a plane of that buffer. A
    pixel's valid frames and interpolation weights are found once; a feature whose values are
    all finite at the pixel (the usual case) is then interpolated row by row with those weights
    (contiguous writes); otherwise it takes the general path over its own finite observations.
    """
    t = frames.shape[0]
    n_src = n_f + n_dn
    h, w = mask.shape[1], mask.shape[2]
    n_feat, k = kind.shape[0], dst_t.shape[0]
    row = np.empty(n_feat, dtype=np.int64)  # the buffer row of each feature
    n_rows = n_src
    for f in range(n_feat):
        if kind[f] == COPY:
            row[f] = ia[f]
        else:
            row[f] = n_rows
            n_rows += 1
    out = np.empty((n_feat * k + 2, h, w), dtype=np.float32)
    t_all = mask.shape[0]
    cnt = np.empty(w, dtype=np.int64)
    buf = np.empty((n_rows, t, w), dtype=np.float32)
    clean = np.empty((n_rows, w), dtype=np.bool_)  # only finite values in this row at the pixel
    mbuf = np.empty((w, t), dtype=np.bool_)
    vi = np.empty(t, dtype=np.int64)
    tt = np.empty(t, dtype=np.float64)
    tv = np.empty(t, dtype=np.float64)
    lo = np.empty((k, w), dtype=np.int64)  # per grid instant and pixel: left and right frame
    hi = np.empty((k, w), dtype=np.int64)  # (equal when the value is held; -1: no observation)
    ww = np.empty((k, w), dtype=np.float64)
    for y in range(h):
        clean[:] = True
        for s in range(n_f):
            a = srcs[s]
            for i in range(t):
                fi = frames[i]
                for x in range(w):
                    v = a[fi, y, x]
                    buf[s, i, x] = v
                    if not np.isfinite(v):
                        clean[s, x] = False
        for s in range(n_dn):
            d = dns[s]
            inv, off, nd = np.float32(dn_inv[s]), np.float32(dn_off[s]), dn_nodata[s]
            for i in range(t):
                fi = frames[i]
                for x in range(w):
                    v = d[fi, y, x]
                    if v == nd:
                        buf[n_f + s, i, x] = np.nan
                        clean[n_f + s, x] = False
                    else:
                        buf[n_f + s, i, x] = np.float32(v) / inv + off
        for f in range(n_feat):
            if kind[f] == COPY:
                continue
            r, ra, rb = row[f], ia[f], ib[f]
            for i in range(t):
                for x in range(w):
                    va, vb = buf[ra, i, x], buf[rb, i, x]
                    s_ = va + vb
                    v = (va - vb) / s_ if s_ != 0 else np.float32(np.nan)
                    buf[r, i, x] = v
                    if not np.isfinite(v):
                        clean[r, x] = False
        for i in range(t):
            fi = frames[i]
            for x in range(w):
                mbuf[x, i] = mask[fi, y, x]
        cnt[:] = 0
        for i in range(t_all):  # every frame, kept or not: VALID_COUNT
            for x in range(w):
                if mask[i, y, x]:
                    cnt[x] += 1
        for x in range(w):
            out[n_feat * k + 1, y, x] = cnt[x]
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
                for q in range(k):
                    lo[q, x] = -1
                continue
            # shared weights; a held value has both neighbours equal and weight 0
            j = 0
            t_first, t_last = src_t[vi[0]], src_t[vi[m - 1]]
            for q in range(k):
                g = dst_t[q]
                if g <= t_first:
                    lo[q, x], hi[q, x], ww[q, x] = vi[0], vi[0], 0.0
                elif g >= t_last:
                    lo[q, x], hi[q, x], ww[q, x] = vi[m - 1], vi[m - 1], 0.0
                else:
                    while src_t[vi[j + 1]] < g:
                        j += 1
                    t0 = src_t[vi[j]]
                    lo[q, x], hi[q, x] = vi[j], vi[j + 1]
                    ww[q, x] = (g - t0) / (src_t[vi[j + 1]] - t0)
            for f in range(n_feat):  # general path: a non-finite value somewhere in the row
                r = row[f]
                if clean[r, x]:
                    continue
                mm = 0
                for p in range(m):
                    v = buf[r, vi[p], x]
                    if np.isfinite(v):
                        tt[mm] = src_t[vi[p]]
                        tv[mm] = v
                        mm += 1
                if mm == 0:
                    for q in range(k):
                        out[f * k + q, y, x] = np.nan
                else:
                    _hold_or_lerp(out, f * k, y, x, tt, tv, mm, dst_t)
        for f in range(n_feat):  # usual path: row by row with the shared weights
            r, base = row[f], f * k
            for q in range(k):
                for x in range(w):
                    if lo[q, x] < 0 or not clean[r, x]:
                        continue
                    v0 = np.float64(buf[r, lo[q, x], x])
                    v1 = np.float64(buf[r, hi[q, x], x])
                    out[base + q, y, x] = v0 + ww[q, x] * (v1 - v0)
    return out


def _fused_block(mask, *arrays, n_dn, dn_inv, dn_off, dn_nodata, **kw):
    """One chunk: float32 sources as they are (other dtypes copied), uint16 ones read in place."""
    n_f = len(arrays) - n_dn
    srcs = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays[:n_f])
    dns = tuple(np.ascontiguousarray(a) for a in arrays[n_f:])
    return fused_features(srcs or (_NO_F32,), n_f, dns or (_NO_DN,), n_dn, dn_inv, dn_off,
                          dn_nodata, np.ascontiguousarray(mask), **kw)  # fmt: skip


_NO_F32 = np.zeros((0, 0, 0), np.float32)
_NO_DN = np.zeros((0, 0, 0), np.uint16)


def interpolate_features(
    ds: xr.Dataset,
    valid: xr.DataArray,
    recipes: list[FeatureRecipe],
    grid: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[dict[str, xr.DataArray], xr.DataArray, xr.DataArray]:
    """Lazy interpolated features (float32, ``time = grid``), ``N_OBS`` and ``VALID_COUNT``.

    One task per chunk. ``N_OBS`` (uint16) counts each pixel's valid observations among
    ``frames``, ``VALID_COUNT`` (uint16, as :func:`eoflow.ops.masks.valid_count`) among all frames;
    both come from the kernel's pass over ``valid``, so the mask is computed inside the chunk's
    task and never materialised as a separate array.

    ``frames`` (integer positions along ``time``, default all) are the frames to use, in any
    order; the others are never copied, the kernel skips them. uint16 bands are read in place as
    ``DN * scale + offset`` from their ``scale``/``offset`` attributes (``nodata`` is invalid), so
    band features and indices are reflectances whatever the cube stores.
    """
    times = ds["time"].values
    frames = np.arange(times.size) if frames is None else np.asarray(frames, dtype=np.int64)
    frames = frames[np.argsort(times[frames], kind="stable")]
    used = sorted({r.a for r in recipes} | {r.b for r in recipes if r.b})
    reading = {n: dn_reading(ds[n]) for n in used}
    # float32 (and other) sources first, then the uint16 ones the kernel reads in place
    names = [n for n in used if reading[n] is None] + [n for n in used if reading[n] is not None]
    dn = [reading[n] for n in names if reading[n] is not None]
    index = {n: i for i, n in enumerate(names)}
    arrays = [ds[n].data.rechunk({0: -1}) for n in names]
    mask = valid.data.rechunk({0: -1})
    kind = np.array([r.kind for r in recipes], np.int64)
    ia = np.array([index[r.a] for r in recipes], np.int64)
    ib = np.array([index[r.b] if r.b else 0 for r in recipes], np.int64)
    k = len(grid)
    planes = len(recipes) * k + 2
    out = da.map_blocks(
        _fused_block, mask, *arrays, frames=frames, kind=kind, ia=ia, ib=ib,
        src_t=_to_days(times[frames]), dst_t=_to_days(grid), n_dn=len(dn),
        dn_inv=np.array([d[0] for d in dn], np.float64),
        dn_off=np.array([d[1] for d in dn], np.float64),
        dn_nodata=np.array([d[2] for d in dn], np.int64),
        dtype=np.float32, chunks=((planes,), *mask.chunks[1:]),
        meta=np.empty((0, 0, 0), np.float32),  # never call the kernel to learn its output type
    )  # fmt: skip
    # one Dataset, so the indexes are built once (not once per feature)
    res = xr.Dataset(
        {r.name: (("time", "y", "x"), out[f * k : (f + 1) * k]) for f, r in enumerate(recipes)}
        | {"N_OBS": (("y", "x"), out[-2].astype(np.uint16)),
           "VALID_COUNT": (("y", "x"), out[-1].astype(np.uint16))},
        coords={"time": grid, "y": ds["y"].variable, "x": ds["x"].variable},
    )  # fmt: skip
    feats = {r.name: res[r.name] for r in recipes}
    return feats, res["N_OBS"], res["VALID_COUNT"]
