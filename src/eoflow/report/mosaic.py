"""Decimated mosaics of per-tile stores, for figures (bounded size however large the area)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from eoflow.geo.tiles import Tile

__all__ = ["mosaic"]


def mosaic(
    store: Path,
    tiles: list[Tile],
    var: str,
    *,
    reduce=None,
    max_px: int = 1500,
    fill: float = np.nan,
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Mosaic ``var`` of every tile, decimated so the longer side stays under ``max_px``.

    ``reduce`` maps a tile's DataArray to a ``(y, x)`` DataArray (e.g. a temporal mean) before
    decimation. Returns the array and its extent ``(left, right, bottom, top)``.
    """
    lefts, bottoms, rights, tops = zip(*(t.bounds for t in tiles))
    rx, ry = tiles[0].res
    left, top = min(lefts), max(tops)
    width = round((max(rights) - left) / rx)
    height = round((top - min(bottoms)) / ry)
    step = max(1, int(np.ceil(max(width, height) / max_px)))
    out = None
    for tile in tiles:
        da = xr.open_zarr(store, group=tile.tile_id, consolidated=False)[var]
        if reduce is not None:
            da = reduce(da)
        block = np.asarray(da[::step, ::step])
        if out is None:
            out = np.full(
                (-(-height // step), -(-width // step)),
                fill,
                dtype=np.result_type(block.dtype, type(fill)),
            )
        r0 = round((top - tile.bounds[3]) / ry) // step
        c0 = round((tile.bounds[0] - left) / rx) // step
        h, w = min(block.shape[0], out.shape[0] - r0), min(block.shape[1], out.shape[1] - c0)
        out[r0 : r0 + h, c0 : c0 + w] = block[:h, :w]
    return out, (left, left + width * rx, top - height * ry, top)
