"""Stratified fraction sampling of reference pixels, deterministic per tile.

Each pixel gets a pseudo-random key from a counter-based hash of ``(seed, tile_id, row, col)``;
within each class of a tile the ``round(fraction * count)`` pixels with the smallest keys are
taken. The selection depends only on the labels, the seed and pixel positions, so it is identical
whatever the number of workers or chunks.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["pixel_keys", "sample_pixels"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _tile_key(seed: int, tile_id: str) -> np.uint64:
    digest = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def pixel_keys(seed: int, tile_id: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Deterministic uint64 keys for pixel positions of one tile."""
    with np.errstate(over="ignore"):
        pos = (rows.astype(np.uint64) << np.uint64(32)) | cols.astype(np.uint64)
        return _splitmix64(pos ^ _tile_key(seed, tile_id))


def sample_pixels(
    labels: np.ndarray, *, fraction: float, exclude: list[int], seed: int, tile_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the sampled pixels of one tile's ``(y, x)`` label raster.

    Per class (except ``exclude``) ``round(fraction * count)`` pixels (halves to even) are drawn
    without replacement. Results are sorted by (row, col).
    """
    rows, cols = np.nonzero(~np.isin(labels, np.asarray(exclude, dtype=labels.dtype)))
    if rows.size == 0:
        return rows.astype(np.int32), cols.astype(np.int32)
    cls = labels[rows, cols]
    keys = pixel_keys(seed, tile_id, rows, cols)
    order = np.lexsort((keys, cls))  # by class, then key
    cls_sorted = cls[order]
    starts = np.flatnonzero(np.r_[True, cls_sorted[1:] != cls_sorted[:-1]])
    counts = np.diff(np.r_[starts, cls_sorted.size])
    take = np.rint(fraction * counts).astype(int)  # half to even, as eo-learn's round()
    rank = np.arange(cls_sorted.size) - np.repeat(starts, counts)
    chosen = order[rank < np.repeat(take, counts)]
    chosen.sort()
    return rows[chosen].astype(np.int32), cols[chosen].astype(np.int32)
