"""Numba kernels for the time-axis work (plain arrays in, plain arrays out)."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["gather_series", "interp_masked", "normalized_difference"]


@numba.njit(cache=True, nogil=True)
def interp_masked(values, valid, src_t, dst_t):
    """Linear interpolation of each row of ``values`` over its valid entries onto ``dst_t``.

    ``values`` (n, t) float32 (time last, contiguous), ``valid`` (n, t) bool, ``src_t`` (t,)
    increasing float64, ``dst_t`` (k,) increasing float64. Returns ``(out (n, k) float32,
    n_valid (n,) int32)``. Outside the valid range the nearest valid value is held
    (``numpy.interp`` semantics); rows with no valid entry are NaN. Non-finite values (NaN,
    inf) never count as observations.
    """
    n, t = values.shape
    k = dst_t.shape[0]
    out = np.empty((n, k), dtype=np.float32)
    counts = np.empty(n, dtype=np.int32)
    tt = np.empty(t, dtype=np.float64)
    tv = np.empty(t, dtype=np.float64)
    for p in range(n):
        m = 0
        for i in range(t):
            v = values[p, i]
            if valid[p, i] and np.isfinite(v):
                tt[m] = src_t[i]
                tv[m] = v
                m += 1
        counts[p] = m
        if m == 0:
            for q in range(k):
                out[p, q] = np.nan
            continue
        j = 0
        for q in range(k):
            x = dst_t[q]
            if x <= tt[0]:
                out[p, q] = tv[0]
            elif x >= tt[m - 1]:
                out[p, q] = tv[m - 1]
            else:
                while tt[j + 1] < x:
                    j += 1
                w = (x - tt[j]) / (tt[j + 1] - tt[j])
                out[p, q] = tv[j] + w * (tv[j + 1] - tv[j])
    return out, counts


@numba.njit(cache=True, nogil=True)
def normalized_difference(a, b):
    """``(a - b) / (a + b)`` in float32; NaN where the denominator is 0 or an input is NaN."""
    out = np.empty(a.shape, dtype=np.float32)
    fa, fb, fo = a.ravel(), b.ravel(), out.ravel()
    for i in range(fa.shape[0]):
        x = np.float32(fa[i])
        y = np.float32(fb[i])
        s = x + y
        fo[i] = (x - y) / s if s != 0 else np.float32(np.nan)
    return out


@numba.njit(cache=True, nogil=True)
def gather_series(blocks, rows, cols, out):
    """``out[i, :, f] = blocks[f][:, rows[i], cols[i]]`` for every picked pixel ``i``.

    ``blocks`` a tuple of (t, h, w) float32 arrays (one per feature), ``out`` (n, t, n_feat)
    float32. Pixel by pixel, so each row of ``out`` is written once, contiguously, and the
    blocks are read near the previous pixel (the picks are sorted by row and column).
    """
    n_feat = len(blocks)
    for i in range(rows.shape[0]):
        r, c = rows[i], cols[i]
        for f in range(n_feat):
            b = blocks[f]
            for q in range(b.shape[0]):
                out[i, q, f] = b[q, r, c]


@numba.njit(cache=True, nogil=True)
def clm_frame_counts(clm, is_data, has_is_data):
    """Valid pixels per frame (``CLM == 0`` and ``IS_DATA != 0``) and pixels with data in any frame.

    ``clm``, ``is_data`` (t, h, w) (``is_data`` ignored unless ``has_is_data``: all pixels have
    data). Returns ``(t + 1,)`` int64: the counts of each frame, then the footprint's size.
    One pass over both arrays, no temporary of their size.
    """
    t, h, w = clm.shape
    out = np.zeros(t + 1, dtype=np.int64)
    seen = np.empty(w, dtype=np.bool_)
    for y in range(h):
        seen[:] = not has_is_data
        for i in range(t):
            c = 0
            for x in range(w):
                d = (not has_is_data) or is_data[i, y, x] != 0
                seen[x] |= d
                c += d and clm[i, y, x] == 0
            out[i] += c
        for x in range(w):
            out[t] += seen[x]
    return out
