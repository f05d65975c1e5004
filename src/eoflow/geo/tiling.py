"""Split an AOI into a grid of square tiles in its UTM zone (like eo-learn's UtmZoneSplitter)."""

from __future__ import annotations

import math

import shapely

from eoflow.geo.aoi import Aoi
from eoflow.geo.tiles import Tile

__all__ = ["split_aoi", "tile_box"]


def tile_box(tile: Tile) -> shapely.Polygon:
    """The tile's footprint as a polygon in its CRS."""
    return shapely.box(*tile.bounds)


def split_aoi(
    aoi: Aoi,
    *,
    tile_size_px: int = 1000,
    res_m: float | tuple[float, float] = 10.0,
    origin: tuple[float, float] = (0.0, 0.0),
) -> list[Tile]:
    """Cover ``aoi`` with square tiles of ``tile_size_px`` pixels on a fixed grid.

    The grid is anchored at ``origin`` (x, y of a pixel corner, default the UTM origin) so a tile's
    id and extent depend only on where it is, never on the AOI's shape: re-running with a larger
    AOI keeps existing tile ids.

    Parameters
    ----------
    aoi
        Area in a UTM CRS.
    tile_size_px
        Tile width and height in pixels.
    res_m
        Pixel size in metres, one value or ``(x, y)``.
    origin
        A grid corner ``(x, y)``; tiles start at ``origin + k * tile_size_px * res``.

    Returns
    -------
    list of Tile
        Tiles intersecting the AOI, ordered north to south, west to east. Ids are
        ``"{epsg}_{col}_{row}"`` where col/row count tiles from ``origin`` (row increases
        northwards).
    """
    rx, ry = (res_m, res_m) if isinstance(res_m, int | float) else res_m
    size_x, size_y = tile_size_px * rx, tile_size_px * ry
    ox, oy = origin
    minx, miny, maxx, maxy = aoi.geometry.bounds
    c0, c1 = math.floor((minx - ox) / size_x), math.ceil((maxx - ox) / size_x)
    r0, r1 = math.floor((miny - oy) / size_y), math.ceil((maxy - oy) / size_y)
    prepared = aoi.geometry
    shapely.prepare(prepared)
    epsg = aoi.crs.split(":")[1]
    tiles = []
    for row in range(r1 - 1, r0 - 1, -1):
        for col in range(c0, c1):
            left, bottom = ox + col * size_x, oy + row * size_y
            footprint = shapely.box(left, bottom, left + size_x, bottom + size_y)
            if not prepared.intersects(footprint) or prepared.touches(footprint):
                continue
            tiles.append(
                Tile(
                    tile_id=f"{epsg}_{col}_{row}",
                    crs=aoi.crs,
                    transform=(rx, 0.0, left, 0.0, -ry, bottom + size_y),
                    width=tile_size_px,
                    height=tile_size_px,
                )
            )
    return tiles
