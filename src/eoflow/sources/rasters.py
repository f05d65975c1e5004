"""Opening rasters safely: only GeoTIFF/COG/JP2 drivers are accepted (GDAL opens by content)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from eoflow.errors import InputError

__all__ = ["ALLOWED_DRIVERS", "open_raster"]

#: Drivers eoflow reads rasters with; VRT and other indirections are refused.
ALLOWED_DRIVERS = frozenset({"GTiff", "COG", "JP2OpenJPEG"})


@contextlib.contextmanager
def open_raster(href: str | Path, *, allow_drivers: frozenset[str] = ALLOWED_DRIVERS) -> Iterator:
    """Open ``href`` with rasterio, refusing empty files, non-rasters and indirection drivers."""
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(str(href))
    if "://" not in str(href):
        if not path.exists():
            raise InputError(f"raster {href} does not exist", "check the path or the catalog hrefs")
        if path.stat().st_size == 0:
            raise InputError(f"raster {href} is empty (0 bytes)", "re-download or remove it")
    try:
        src = rasterio.open(href)
    except RasterioIOError as exc:
        raise InputError(
            f"raster {href} cannot be opened as GeoTIFF/COG: {' '.join(str(exc).split())[:160]}",
            "check the file is a complete GeoTIFF",
        ) from exc
    try:
        if src.driver not in allow_drivers:
            raise InputError(
                f"raster {href} is a {src.driver} file, not GeoTIFF/COG/JP2",
                "convert it to GeoTIFF (indirections such as VRT are refused)",
            )
        if src.crs is None:
            raise InputError(f"raster {href} has no CRS", "assign one (gdal_edit.py -a_srs)")
        yield src
    finally:
        src.close()
