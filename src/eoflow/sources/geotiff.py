"""Local GeoTIFF / COG sets (a folder, a glob or a list of files) as a lazy cube.

The result is the same cube the STAC path builds (:mod:`eoflow.cube.model`): dims
``time, y, x``, one variable per band in its native dtype, one Dask task per chunk, on the given
:class:`~eoflow.geo.tiles.Tile`. Files on another grid are reprojected explicitly (nearest
neighbour unless told otherwise) and reported (``attrs["reprojected"]`` and a
:class:`~eoflow.gpkg.lazy.ReprojectionWarning`).

Dates, in this order:

1. ``date_pattern`` given: a regular expression searched in the file name (named group ``date``,
   else group 1, else the whole match), parsed as ``YYYY-MM-DD``/``YYYYMMDD`` with optional time;
2. otherwise the TIFF metadata items ``RASTER_DATE``, ``ACQUISITION_DATE``, ``DATE_ACQUIRED``,
   ``SENSING_TIME``, then an ISO date in the file name, then ``TIFFTAG_DATETIME``.

Band names: ``band_names`` (config) if given, else the band descriptions, else ``band_<k>``.
Files of one date with different bands are merged into one time step. Only the GTiff and COG
drivers are accepted (GDAL opens by content: a VRT named ``.tif`` is refused).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eoflow.errors import ConfigError, InputError
from eoflow.geo.tiles import Tile
from eoflow.gpkg.dates import find_date, parse_date
from eoflow.gpkg.lazy import BandEntry, RasterRef, build_cube, grid_of, open_checked

__all__ = ["DATE_TAGS", "file_date", "find_geotiffs", "load_geotiff_cube"]

#: TIFF metadata items read for the acquisition date (before the file name).
DATE_TAGS = ("RASTER_DATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME")
_SUFFIXES = (".tif", ".tiff")
_TIFF_DRIVERS = frozenset({"GTiff", "COG"})


def find_geotiffs(paths_or_glob: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand a folder (``*.tif``/``*.tiff``), a glob or a list into sorted, unique files.

    Raises
    ------
    InputError
        Nothing found, or a listed file does not exist.
    """
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, Path)) else list(paths_or_glob)
    found: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found += [f for f in sorted(p.iterdir()) if f.suffix.lower() in _SUFFIXES]
        elif any(ch in text for ch in "*?["):
            found += [Path(f) for f in sorted(glob.glob(text))]
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"raster {p} does not exist", "check the folder, glob or file list")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError(f"no GeoTIFF files found in {paths_or_glob}",
                         "give a folder of .tif/.tiff files or a glob like 'dir/*_B04.tif'")  # fmt: skip
    return unique


def file_date(path: Path, tags: Mapping[str, str], date_pattern: str | None) -> np.datetime64:
    """The acquisition date of one file (see the module docstring for the order).

    Raises
    ------
    InputError
        No date found (or ``date_pattern`` does not match the name).
    ConfigError
        ``date_pattern`` is not a valid regular expression.
    """
    if date_pattern:
        try:
            rx = re.compile(date_pattern)
        except re.error as exc:
            raise ConfigError(f"date_pattern {date_pattern!r} is not a regex: {exc}",
                              r"use e.g. '(\d{8})' or '(?P<date>\d{4}-\d{2}-\d{2})'") from None  # fmt: skip
        m = rx.search(path.name)
        text = None
        if m:
            text = m.groupdict().get("date") or (m.group(1) if rx.groups else m.group(0))
        value = parse_date(text)
        if value is None:
            raise InputError(
                f"file name {path.name} gives no date with date_pattern {date_pattern!r}",
                "fix the pattern or rename the file (YYYY-MM-DD or YYYYMMDD)",
            )
        return value
    for key in DATE_TAGS:
        value = parse_date(tags.get(key))
        if value is not None:
            return value
    found = find_date(path.stem)
    if found:
        return found[0]
    value = parse_date(tags.get("TIFFTAG_DATETIME"))
    if value is not None:
        return value
    raise InputError(
        f"no acquisition date for {path} (no date tag, no date in the file name)",
        "pass date_pattern or name files like S2_2017-06-01.tif",
    )


def _band_names(
    path: Path, count: int, descriptions, band_names: Sequence[str] | None
) -> list[str]:
    if band_names is not None:
        if len(band_names) != count:
            raise ConfigError(
                f"{path} has {count} bands but {len(band_names)} band names were given "
                f"({list(band_names)})", "give one name per band",
            )  # fmt: skip
        return [str(b) for b in band_names]
    names = [d if d else f"band_{k + 1}" for k, d in enumerate(descriptions)]
    return [re.sub(r"\W+", "_", n).strip("_") or f"band_{k + 1}" for k, n in enumerate(names)]


def load_geotiff_cube(
    paths_or_glob: str | Path | Sequence[str | Path],
    *,
    tile: Tile,
    date_pattern: str | None = None,
    band_names: list[str] | None = None,
    chunks: dict | None = None,
    resampling: str = "nearest",
):
    """Read a set of dated GeoTIFF/COG files into a lazy cube on ``tile``.

    Parameters
    ----------
    paths_or_glob
        Folder, glob (``"scenes/*.tif"``) or list of files.
    tile
        Target grid; files on other grids are reprojected (and reported).
    date_pattern
        Regex for the date in the file name (default: tags, then an ISO date in the name).
    band_names
        Variable names for the bands of every file (default: band descriptions, ``band_<k>``).
    chunks
        ``{"y": N, "x": N}``.
    resampling
        rasterio resampling name for reprojected files.

    Returns
    -------
    xarray.Dataset
        Dims ``time, y, x``; one Dask task per chunk.

    Raises
    ------
    InputError
        Missing files, non-GeoTIFF drivers (VRT, PNG...), no CRS, no date.
    ConfigError
        Bad ``date_pattern`` or a band-name count that does not fit.
    DataError
        The same band twice at one date, a band missing at some dates, mixed dtypes.
    """
    files = find_geotiffs(paths_or_glob)
    entries = []
    for f in files:
        with open_checked(str(f)) as src:
            if src.driver not in _TIFF_DRIVERS:
                raise InputError(f"raster {f} is a {src.driver} file, not GeoTIFF/COG",
                                 "use load_gpkg_raster_cube for GeoPackages")  # fmt: skip
            when = file_date(f, src.tags(), date_pattern)
            names = _band_names(f, src.count, src.descriptions, band_names)
            grid = grid_of(src, tile.tile_id)
            dtypes, nodata = src.dtypes, src.nodata
        for k, name in enumerate(names):
            ref = RasterRef(str(f), k + 1, (), False, f.name)
            entries.append(BandEntry(np.datetime64(when, "ns"), name, ref, grid, dtypes[k], nodata))
    label = str(paths_or_glob) if isinstance(paths_or_glob, (str, Path)) else f"{len(files)} files"
    return build_cube(entries, tile=tile, tile_id=tile.tile_id, source=label, chunks=chunks,
                      resampling=resampling)  # fmt: skip
