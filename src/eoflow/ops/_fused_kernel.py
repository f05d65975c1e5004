"""The fused kernel of :mod:`eoflow.ops.fused` (numba; imported by the workers that run it)."""

from __future__ import annotations

import numba
import numpy as np

from eoflow.ops.fused import COPY

__all__ = ["fused_features"]


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
def _weights(lo, hi, ww, x, vi, m, src_t, dst_t):
    """Column ``x`` of ``lo/hi/ww`` (k, *): each grid instant's neighbouring observations among
    the ``m`` valid frames ``vi`` and the weight of the right one (held values: equal, 0)."""
    j = 0
    t_first, t_last = src_t[vi[0]], src_t[vi[m - 1]]
    for q in range(dst_t.shape[0]):
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


@numba.njit(cache=True, nogil=True)
def _lerp_runs(dst, src, lo, hi, ww, run0, run1, n_run):
    """``dst[x] = src[lo[j], x] + ww[j] * (src[hi[j], x] - src[lo[j], x])`` over each run ``j``
    (in float64; 1-D views, so each run is a plain contiguous loop)."""
    for j in range(n_run):
        a, b, wj = src[lo[j]], src[hi[j]], ww[j]
        for x in range(run0[j], run1[j]):
            v0 = np.float64(a[x])
            dst[x] = v0 + wj * (np.float64(b[x]) - v0)


@numba.njit(cache=True, nogil=True)
def _same_frames(mbuf, x0, x1, t):
    """Whether pixels ``x0`` and ``x1`` of a row are valid at the same frames."""
    for i in range(t):  # noqa: SIM110 - a plain loop in numba (no generator)
        if mbuf[x0, i] != mbuf[x1, i]:
            return False
    return True


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
    all finite at the pixel (the usual case) is then interpolated with those weights;
    otherwise it takes the general path over its own finite observations.
    Neighbouring pixels valid at the same frames (under the same clouds, or clear at every kept
    frame: on the benchmark's real cloud mask, 500-pixel rows hold ~23 such runs) share their
    weights, so the weights are found once per run and each run is interpolated by a
    contiguous, branch-free loop that the compiler vectorises.
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
    # a row's runs of neighbouring pixels with the same valid frames (pixels under the same
    # clouds, or clear at every kept frame) share their weights: per run, its first and end
    # pixel, and per grid instant the left and right frame (equal when
    # the value is held) and the right one's weight
    run0 = np.empty(w, dtype=np.int64)
    run1 = np.empty(w, dtype=np.int64)
    lo = np.empty((k, w), dtype=np.int64)
    hi = np.empty((k, w), dtype=np.int64)
    ww = np.empty((k, w), dtype=np.float64)
    mcount = np.empty(w, dtype=np.int64)
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
        n_run = 0
        x = 0
        while x < w:
            x1 = x + 1
            while x1 < w and _same_frames(mbuf, x, x1, t):
                x1 += 1
            m = 0
            for i in range(t):
                if mbuf[x, i]:
                    vi[m] = i
                    m += 1
            for xx in range(x, x1):
                out[n_feat * k, y, xx] = m
                mcount[xx] = m
            if m > 0:  # no observation: NaN, below
                _weights(lo, hi, ww, n_run, vi, m, src_t, dst_t)
                run0[n_run], run1[n_run] = x, x1
                n_run += 1
            x = x1
        for f in range(n_feat):  # usual path: run by run, contiguous (vectorised) loops
            for q in range(k):
                _lerp_runs(out[f * k + q, y], buf[row[f]], lo[q], hi[q], ww[q], run0, run1, n_run)
        for x in range(w):  # no observation: NaN; a non-finite value: the general path
            m = mcount[x]
            if m == 0:
                for p in range(n_feat * k):
                    out[p, y, x] = np.nan
                continue
            vm = 0
            for f in range(n_feat):
                r = row[f]
                if clean[r, x]:
                    continue
                if vm == 0:
                    for i in range(t):
                        if mbuf[x, i]:
                            vi[vm] = i
                            vm += 1
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
    return out
