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

__all__ = ["FeatureRecipe", "fused_features", "interpolate_features", "recipes_for", "reflectance"]

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
    days. Returns ``(n_feat * k + 1, h, w)`` float32: each feature's interpolated series, then the
    number of valid observations. Non-finite values never count; outside the valid range the
    nearest valid value is held; no valid observation gives NaN.

    Each image row is transposed into a small time-contiguous buffer (fits in cache), converting
    digital numbers on the way (no float32 copy of a uint16 band). A pixel's valid frames and its
    interpolation weights are found once and shared by every feature whose values are all finite
    there (the usual case); a feature with a non-finite value at a valid frame takes the general
    path over its own finite observations.
    """
    t = frames.shape[0]
    n_src = n_f + n_dn
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
        for s in range(n_f):
            a = srcs[s]
            for i in range(t):
                fi = frames[i]
                for x in range(w):
                    buf[s, x, i] = a[fi, y, x]
        for s in range(n_dn):
            d = dns[s]
            inv, off, nd = np.float32(dn_inv[s]), np.float32(dn_off[s]), dn_nodata[s]
            for i in range(t):
                fi = frames[i]
                for x in range(w):
                    v = d[fi, y, x]
                    if v == nd:
                        buf[n_f + s, x, i] = np.nan
                    else:
                        buf[n_f + s, x, i] = np.float32(v) / inv + off
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


def _fused_block(mask, *arrays, n_dn, dn_inv, dn_off, dn_nodata, **kw):
    """One chunk: float32 sources as they are (other dtypes copied), uint16 ones read in place."""
    n_f = len(arrays) - n_dn
    srcs = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays[:n_f])
    dns = tuple(np.ascontiguousarray(a) for a in arrays[n_f:])
    return fused_features(srcs or (_NO_F32,), n_f, dns or (_NO_DN,), n_dn, dn_inv, dn_off,
                          dn_nodata, np.ascontiguousarray(mask), **kw)  # fmt: skip


_NO_F32 = np.zeros((0, 0, 0), np.float32)
_NO_DN = np.zeros((0, 0, 0), np.uint16)


def _dn_reading(var: xr.DataArray) -> tuple[float, float, int] | None:
    """``(1 / scale, offset, nodata)`` to read a uint16 band in place, or None (read as float32).

    ``reflectance = DN * scale + offset`` (cube attrs, ``docs/formats.md``), computed as
    ``float32(DN) / (1 / scale) + offset``: with ``scale = 1e-4`` that is exactly the float32 of
    ``DN / 10000``. No ``scale`` attribute keeps the digital numbers as they are.
    """
    if var.dtype != np.uint16:
        return None
    scale = float(var.attrs.get("scale", 1.0) or 1.0)
    nodata = var.attrs.get("nodata")
    nd = int(nodata) if nodata is not None and 0 <= float(nodata) <= 65535 else -1
    return 1.0 / scale, float(var.attrs.get("offset", 0.0) or 0.0), nd


def reflectance(var: xr.DataArray) -> xr.DataArray:
    """A band as the fused kernel reads it: float32, uint16 ``DN * scale + offset`` (NaN at nodata).

    Lazy, elementwise; the same arithmetic as :func:`fused_features` (so equal bit for bit).
    """
    reading = _dn_reading(var)
    if reading is None:
        return var.astype(np.float32)
    inv, off, nd = reading
    out = var.astype(np.float32) / np.float32(inv) + np.float32(off)
    return out.where(var != nd) if nd >= 0 else out


def interpolate_features(
    ds: xr.Dataset,
    valid: xr.DataArray,
    recipes: list[FeatureRecipe],
    grid: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """Lazy interpolated features (float32, ``time = grid``) and ``N_OBS`` (uint16), one task per chunk.

    ``frames`` (integer positions along ``time``, default all) are the frames to use, in any
    order; the others are never copied, the kernel skips them. uint16 bands are read in place as
    ``DN * scale + offset`` from their ``scale``/``offset`` attributes (``nodata`` is invalid), so
    band features and indices are reflectances whatever the cube stores.
    """
    times = ds["time"].values
    frames = np.arange(times.size) if frames is None else np.asarray(frames, dtype=np.int64)
    frames = frames[np.argsort(times[frames], kind="stable")]
    used = sorted({r.a for r in recipes} | {r.b for r in recipes if r.b})
    reading = {n: _dn_reading(ds[n]) for n in used}
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
    planes = len(recipes) * k + 1
    out = da.map_blocks(
        _fused_block, mask, *arrays, frames=frames, kind=kind, ia=ia, ib=ib,
        src_t=_to_days(times[frames]), dst_t=_to_days(grid), n_dn=len(dn),
        dn_inv=np.array([d[0] for d in dn], np.float64),
        dn_off=np.array([d[1] for d in dn], np.float64),
        dn_nodata=np.array([d[2] for d in dn], np.int64),
        dtype=np.float32, chunks=((planes,), *mask.chunks[1:]),
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
