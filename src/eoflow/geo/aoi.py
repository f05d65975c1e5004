"""Areas of interest: read, validate, buffer, and express in their UTM zone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from eoflow.errors import InputError

__all__ = ["Aoi", "load_aoi", "utm_crs_for"]

_VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}


@dataclass(frozen=True)
class Aoi:
    """An area of interest in its UTM zone."""

    geometry: BaseGeometry
    """(Multi)polygon in :attr:`crs`."""
    crs: str
    """``"EPSG:326NN"`` or ``"EPSG:327NN"``."""
    source: str
    """Where it came from (file path or ``"bbox"``)."""

    @property
    def area_km2(self) -> float:
        """Area in square kilometres."""
        return float(self.geometry.area) / 1e6


def utm_crs_for(lon: float, lat: float) -> str:
    """EPSG code of the UTM zone containing ``(lon, lat)``."""
    zone = int((lon + 180.0) // 6.0) + 1
    zone = min(max(zone, 1), 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def _read_geometry(path: Path, layer: str | None) -> tuple[BaseGeometry, str]:
    import geopandas as gpd
    import pyogrio

    if not path.exists():
        raise InputError(f"AOI file {path} does not exist", "check the path in 'aoi.path'")
    if path.stat().st_size == 0:
        raise InputError(f"AOI file {path} is empty (0 bytes)", "give a GeoJSON or GeoPackage")
    if path.suffix.lower() not in _VECTOR_SUFFIXES:
        raise InputError(
            f"AOI file {path} has an unsupported type {path.suffix!r}",
            f"use one of {sorted(_VECTOR_SUFFIXES)}",
        )
    try:
        if layer is not None:
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            if layer not in names:
                raise InputError(f"AOI file {path} has no layer {layer!r}", f"layers: {names}")
        gdf = gpd.read_file(path, layer=layer)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"AOI file {path} cannot be read: {' '.join(str(exc).split())[:200]}",
            "check that it is a valid GeoJSON or GeoPackage",
        ) from exc
    if gdf.empty or gdf.geometry.isna().all():
        raise InputError(f"AOI file {path} holds no geometry", "draw a polygon for the area")
    if gdf.crs is None:
        raise InputError(f"AOI file {path} has no CRS", "declare the CRS (e.g. EPSG:4326)")
    geom = shapely.make_valid(shapely.union_all(gdf.geometry.values))
    return geom, gdf.crs.to_string()


def load_aoi(
    path: str | Path | None = None,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: str = "EPSG:4326",
    layer: str | None = None,
    buffer_m: float = 0.0,
) -> Aoi:
    """Load an AOI from a vector file or a bounding box and express it in its UTM zone.

    Parameters
    ----------
    path
        GeoJSON / GeoPackage with one or more polygons (unioned).
    bbox, bbox_crs
        Alternative to ``path``: ``(minx, miny, maxx, maxy)`` in ``bbox_crs``.
    layer
        Layer name for multi-layer files.
    buffer_m
        Buffer in metres applied in the UTM CRS.

    Returns
    -------
    Aoi
        Polygonal geometry in the UTM zone of its centroid.
    """
    if (path is None) == (bbox is None):
        raise InputError(
            "give exactly one of an AOI path or a bbox", "set 'aoi.path' or 'aoi.bbox'"
        )
    if path is not None:
        geom, crs = _read_geometry(Path(path), layer)
        source = str(path)
    else:
        geom, crs, source = shapely.box(*bbox), bbox_crs, "bbox"
    if geom.is_empty or geom.area == 0:
        raise InputError(f"AOI from {source} is empty or has zero area", "give a polygon")
    to_wgs84 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    c = geom.centroid
    lon, lat = to_wgs84.transform(c.x, c.y)
    src = pyproj.CRS.from_user_input(crs)
    utm = utm_crs_for(lon, lat)
    if src.to_epsg() is not None and src.to_epsg() == int(utm.split(":")[1]):
        geom_utm = geom
    else:
        fwd = pyproj.Transformer.from_crs(crs, utm, always_xy=True)
        geom_utm = shapely.transform(geom, lambda xy: _apply(fwd, xy))
    minx, _, maxx, _ = shapely.transform(geom, lambda xy: _apply(to_wgs84, xy)).bounds
    if maxx - minx > 180:
        raise InputError(f"AOI from {source} crosses the antimeridian", "split it into two AOIs")
    _check_zone_span(minx, maxx, utm, source)
    if buffer_m:
        geom_utm = geom_utm.buffer(buffer_m)
    return Aoi(geometry=geom_utm, crs=utm, source=source)


#: How far (degrees of longitude) an AOI may reach beyond its UTM zone before distortion matters.
MAX_ZONE_OVERLAP_DEG = 3.0


def _check_zone_span(min_lon: float, max_lon: float, utm: str, source: str) -> None:
    """Refuse AOIs reaching more than MAX_ZONE_OVERLAP_DEG outside their centroid's UTM zone."""
    zone = int(utm[-2:])
    west, east = -180.0 + (zone - 1) * 6.0, -180.0 + zone * 6.0
    if min_lon < west - MAX_ZONE_OVERLAP_DEG or max_lon > east + MAX_ZONE_OVERLAP_DEG:
        z0 = int((min_lon + 180) // 6) + 1
        z1 = int((max_lon + 180) // 6) + 1
        raise InputError(
            f"AOI from {source} spans UTM zones {z0}-{z1} (lon {min_lon:.2f}..{max_lon:.2f}); "
            f"zone {zone} covers lon {west:.0f}..{east:.0f} (+-{MAX_ZONE_OVERLAP_DEG:.0f} deg tolerated)",
            "split the AOI by UTM zone and run each part",
        )


def _apply(transformer: pyproj.Transformer, xy):
    import numpy as np

    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])
