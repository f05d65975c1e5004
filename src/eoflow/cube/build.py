"""Assemble one tile's lazy cube from a source, following :mod:`eoflow.cube.model`."""

from __future__ import annotations

import xarray as xr

from eoflow.cube.model import make_cube, validate_cube
from eoflow.geo.tiles import Tile
from eoflow.sources.stac import ItemSet, load_static, stack_items

__all__ = ["build_stac_cube"]


def build_stac_cube(
    itemset: ItemSet,
    tile: Tile,
    *,
    assets: list[str] | None = None,
    static_assets: list[str] = (),
    chunk_px: int = 512,
) -> xr.Dataset:
    """Lazy cube of ``tile`` from STAC Items; no pixel is read.

    Returns
    -------
    xarray.Dataset
        Dims ``time, y, x``; one variable per asset in its native dtype; static layers ``(y, x)``;
        chunks ``(all times, chunk_px, chunk_px)``.
    """
    arrays, times, attrs = stack_items(itemset, tile, assets=assets, chunk_px=chunk_px)
    for key in static_assets:
        arrays[key] = load_static(itemset, key, tile, chunk_px)
    ds = make_cube(arrays, tile=tile, time=times, attrs=attrs)
    ds.attrs["source"] = itemset.source
    ds.attrs["items"] = [i["id"] for i in itemset.items]
    validate_cube(ds)
    return ds
