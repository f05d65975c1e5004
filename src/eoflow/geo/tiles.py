"""The one geometry value object that travels everywhere: :class:`Tile`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine

__all__ = ["Tile"]


@dataclass(frozen=True)
class Tile:
    """A north-up pixel grid in one CRS, with a stable id.

    Built once by tiling and handed to sources, rasterising, writing and plotting.
    """

    tile_id: str
    """Stable identifier, e.g. ``"32633_0465_5079"`` (zone, x km, y km of the origin)."""
    crs: str
    """CRS as ``"EPSG:NNNNN"``."""
    transform: tuple[float, float, float, float, float, float]
    """Affine coefficients ``(a, b, c, d, e, f)`` (GDAL order as in :class:`affine.Affine`)."""
    width: int
    """Number of columns (x)."""
    height: int
    """Number of rows (y)."""

    @cached_property
    def affine(self) -> Affine:
        """The transform as an :class:`affine.Affine`."""
        return Affine(*self.transform)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, both positive."""
        return (abs(self.transform[0]), abs(self.transform[4]))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        a, _, c, _, e, f = self.transform
        right = c + a * self.width
        bottom = f + e * self.height
        return (min(c, right), min(f, bottom), max(c, right), max(f, bottom))

    @property
    def epsg(self) -> int:
        """The EPSG code as an integer."""
        return int(self.crs.split(":")[1])

    def x_coords(self) -> np.ndarray:
        """Pixel-centre x coordinates (float64, length ``width``)."""
        a, _, c = self.transform[:3]
        return c + a * (np.arange(self.width) + 0.5)

    def y_coords(self) -> np.ndarray:
        """Pixel-centre y coordinates (float64, length ``height``)."""
        e, f = self.transform[4], self.transform[5]
        return f + e * (np.arange(self.height) + 0.5)

    def __dask_tokenize__(self) -> tuple:
        return ("eoflow.Tile", self.tile_id, self.crs, self.transform, self.width, self.height)

    def to_dict(self) -> dict:
        """JSON-friendly description."""
        return {
            "tile_id": self.tile_id,
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Tile:
        """Inverse of :meth:`to_dict`."""
        return cls(d["tile_id"], d["crs"], tuple(d["transform"]), int(d["width"]), int(d["height"]))
