"""Dated GeoPackage raster layers <-> lazy cube.

Reading: every raster layer (tiles or 2-D gridded coverage) whose date can be found becomes one
time step. The date comes from the table's GDAL metadata item ``RASTER_DATE`` first, then an ISO
date in the layer description, then in the layer name (see :mod:`eoflow.gpkg.catalog`). The
variable comes from the metadata item ``EOFLOW_VARIABLE`` (written by eoflow), else the layer name
with its date removed (``NDVI_2017-06-01`` -> ``NDVI``); a name without a date (dated only by
metadata or description) gives the variable ``value``. Multi-band layers give
``<variable>_<k>`` variables.

Writing: one layer per (variable, date), named ``<variable>_<YYYY-MM-DD>``, with ``RASTER_DATE``
and ``EOFLOW_VARIABLE`` metadata, so that export -> list -> re-import returns the same dates and
values. GeoPackage rasters hold ``uint8`` (PNG tiles), ``int16``/``uint16`` (PNG gridded coverage)
and ``float32`` (TIFF gridded coverage), one band per layer for the latter; other dtypes are
refused. Appending never touches the other tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eoflow.errors import DataError, InputError
from eoflow.geo.tiles import Tile
from eoflow.gpkg.catalog import LayerInfo, list_layers, require_gpkg
from eoflow.gpkg.dates import format_date, strip_date
from eoflow.gpkg.lazy import BandEntry, RasterRef, build_cube, grid_of, open_checked

__all__ = ["WRITABLE_DTYPES", "layer_entries", "load_gpkg_raster_cube", "write_gpkg_raster_cube"]

#: dtypes a GeoPackage raster layer stores exactly (GDAL GPKG driver).
WRITABLE_DTYPES = ("uint8", "int16", "uint16", "float32")


def _variable_of(layer: LayerInfo) -> str:
    """EOFLOW_VARIABLE metadata, else the name without its date, else ``value``."""
    var = layer.metadata.get("EOFLOW_VARIABLE")
    if not var:
        stripped = strip_date(layer.name)
        var = stripped if stripped != layer.name else "value"
    return re.sub(r"\W+", "_", var).strip("_") or "value"


def layer_entries(path: Path, layers: list[LayerInfo]) -> list[BandEntry]:
    """One :class:`BandEntry` per band of each dated raster layer (grid read with GDAL)."""
    entries = []
    for layer in layers:
        if layer.date is None:
            raise InputError(
                f"raster layer {layer.name!r} of {path} has no date (no RASTER_DATE metadata, "
                "no ISO date in its description or name)",
                "add -mo RASTER_DATE=YYYY-MM-DD or exclude it with --match",
            )
        opts = layer.open_options()
        href = f"GPKG:{path}:{layer.name}"
        label = f"{path.name}:{layer.name}"
        with open_checked(href, label=label, open_options=opts) as src:
            grid = grid_of(src, path.stem)
            count, dtype, nodata = src.count, src.dtypes[0], src.nodata
        var = _variable_of(layer)
        for band in range(1, count + 1):
            name = var if count == 1 else f"{var}_{band}"
            ref = RasterRef(href, band, tuple(opts.items()), False, label)
            entries.append(
                BandEntry(np.datetime64(layer.date, "ns"), name, ref, grid, dtype, nodata)
            )
    return entries


def load_gpkg_raster_cube(
    path: str | Path,
    *,
    tile: Tile | None = None,
    match: str | None = None,
    chunks: Mapping | None = None,
    resampling: str = "nearest",
):
    """Read a GeoPackage's dated raster layers into a lazy cube.

    Parameters
    ----------
    path
        GeoPackage file.
    tile
        Target grid. None = the layers' own common grid (an error if they differ). Layers on
        another grid are reprojected explicitly and reported (``attrs["reprojected"]`` and a
        :class:`~eoflow.gpkg.lazy.ReprojectionWarning`).
    match
        Shell glob on layer names (``NDVI_*``).
    chunks
        ``{"y": N, "x": N}``; time chunks are one layer.
    resampling
        rasterio resampling for reprojected layers (``nearest`` keeps values and dtype).

    Returns
    -------
    xarray.Dataset
        Dims ``time, y, x``, one variable per band, native dtypes, Dask-backed.

    Raises
    ------
    InputError
        Not a GeoPackage, no (matching) raster layers, an undated layer, different grids
        without ``tile``.
    DataError
        A variable missing at some dates, duplicate dates for a variable, mixed dtypes.
    """
    path = require_gpkg(path)
    layers = list_layers(path, kind="raster", match=match, details=False)
    if not layers:
        every = [lyr.name for lyr in list_layers(path, details=False)]
        raise InputError(
            f"no raster layers{f' matching {match!r}' if match else ''} in {path}",
            f"existing layers: {every}",
        )
    entries = layer_entries(path, layers)
    return build_cube(entries, tile=tile, tile_id=path.stem, source=str(path), chunks=chunks,
                      resampling=resampling)  # fmt: skip


def _write_layer(
    path: Path, name: str, frame: np.ndarray, tile: Tile, tags: dict[str, str], nodata
) -> None:
    import rasterio

    opts = {"RASTER_TABLE": name, "APPEND_SUBDATASET": "YES"} if path.exists() else {
        "RASTER_TABLE": name}  # fmt: skip
    profile = {
        "driver": "GPKG", "width": tile.width, "height": tile.height, "count": 1,
        "dtype": str(frame.dtype), "crs": tile.crs, "transform": tile.affine,
    }  # fmt: skip
    has_nodata = nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata))
    if has_nodata and frame.dtype != np.uint8:
        profile["nodata"] = nodata
    if frame.dtype == np.float32:
        opts["TILE_FORMAT"] = "TIFF"
    with rasterio.open(path, "w", **profile, **opts) as dst:
        dst.write(frame, 1)
        dst.update_tags(**tags)


def write_gpkg_raster_cube(
    ds,
    path: str | Path,
    *,
    variables: list[str] | None = None,
    template: str = "{variable}_{date}",
    overwrite: bool = False,
) -> list[str]:
    """Write a cube as one GeoPackage raster layer per (variable, date).

    Each layer carries ``RASTER_DATE`` (``YYYY-MM-DD``, with time when not midnight) and
    ``EOFLOW_VARIABLE`` metadata. Frames are computed one at a time. Existing layers of ``path``
    are never touched.

    Parameters
    ----------
    ds
        Cube (dims ``time, y, x``) with a CRS.
    path
        GeoPackage to create or append to.
    variables
        Variables to write (default: all with a ``time`` dim).
    template
        Layer name template with ``{variable}`` and ``{date}``.
    overwrite
        Replace existing layers of the same name instead of refusing.

    Returns
    -------
    list of str
        The layer names written, in order.

    Raises
    ------
    DataError
        A dtype a GeoPackage raster cannot hold, or a layer name that already exists.
    """
    from eoflow.cube.model import cube_tile

    path = Path(path)
    tile = cube_tile(ds)
    names = variables or [v for v in ds.data_vars if "time" in ds[v].dims]
    for v in names:
        if v not in ds.data_vars:
            raise InputError(f"variable {v!r} not in the cube", f"variables: {list(ds.data_vars)}")
        if str(ds[v].dtype) not in WRITABLE_DTYPES:
            raise DataError(
                f"variable {v!r} is {ds[v].dtype}; GeoPackage rasters hold {WRITABLE_DTYPES}",
                f"cast it first, e.g. ds[{v!r}].astype('float32')",
            )
    existing = {lyr.name for lyr in list_layers(path, details=False)} if path.exists() else set()
    plan = []
    for v in names:
        for i, t in enumerate(ds["time"].values):
            layer = template.format(variable=v, date=format_date(t).replace(":", ""))
            if layer in existing and not overwrite:
                raise DataError(f"layer {layer!r} already exists in {path}",
                                "choose another template or pass overwrite")  # fmt: skip
            plan.append((v, i, t, layer))
    if len({p[3] for p in plan}) != len(plan):
        raise DataError(f"layer template {template!r} gives duplicate names",
                        "include {variable} and {date}")  # fmt: skip
    for v, i, t, layer in plan:
        frame = np.asarray(ds[v].isel(time=i).values)  # one 2-D frame at a time
        tags = {"RASTER_DATE": format_date(t), "EOFLOW_VARIABLE": v}
        if frame.dtype == np.uint8:
            tags["EOFLOW_BAND_COUNT"] = "1"
        _write_layer(path, layer, frame, tile, tags, ds[v].attrs.get("nodata"))
    return [p[3] for p in plan]
