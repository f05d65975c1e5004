"""Writing results into GeoPackages: class maps as polygons, CSV joins, incremental appends.

Every writer adds layers to an existing GeoPackage without touching the other tables, and
refuses to replace an existing layer unless ``overwrite=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eoflow.errors import DataError, InputError
from eoflow.gpkg.catalog import check_columns, check_layer, list_layers, require_gpkg
from eoflow.gpkg.lazy import open_checked
from eoflow.reference.classes import ClassTable

__all__ = [
    "append_layer",
    "join_csv",
    "read_class_map",
    "vectorize_classes",
    "write_vector_layer",
]


def read_class_map(src: str | Path, *, layer: str | None = None, band: int = 1):
    """Read a 2-D class raster (GeoTIFF/COG, or a GeoPackage raster ``layer``).

    Returns
    -------
    tuple
        ``(array, transform, crs string, nodata)``.
    """
    src = Path(src)
    href = str(src)
    if src.suffix.lower() == ".gpkg":
        if not layer:
            rasters = [x.name for x in list_layers(src, kind="raster", details=False)]
            raise InputError(
                f"{src} is a GeoPackage: name the raster layer", f"raster layers: {rasters}"
            )
        check_layer(src, layer, kind="raster")
        href = f"GPKG:{src}:{layer}"
    elif not src.exists():
        raise InputError(f"class map {src} does not exist", "check the path")
    with open_checked(href) as ds:
        if band > ds.count:
            raise InputError(f"{href} has {ds.count} band(s), not {band}", "choose another band")
        arr = ds.read(band)
        epsg = ds.crs.to_epsg()
        return arr, ds.transform, f"EPSG:{epsg}" if epsg else ds.crs.to_string(), ds.nodata


def _areas(geoms, crs: str) -> np.ndarray:
    from pyproj import CRS, Geod

    if CRS.from_user_input(crs).is_geographic:
        geod = Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    return np.asarray(geoms.area)


def vectorize_classes(
    class_map,
    *,
    classes: ClassTable | None = None,
    transform=None,
    crs: str | None = None,
    nodata: float | None = None,
    skip: tuple[int, ...] = (),
    connectivity: int = 4,
):
    """Polygons of equal class from a class map (e.g. the prediction raster).

    Parameters
    ----------
    class_map
        2-D integer array (with ``transform`` and ``crs``), or a 2-D ``xarray.DataArray`` with a
        rioxarray CRS, or a raster path (see :func:`read_class_map`).
    classes
        Class table for ``class_name`` (unknown ids become ``"class <id>"``).
    transform, crs
        Grid of a plain array.
    nodata
        Value left out (default: the raster's nodata).
    skip
        Further class ids left out (e.g. ``(0,)``).
    connectivity
        4 or 8.

    Returns
    -------
    geopandas.GeoDataFrame
        ``class_id, class_name, area_m2, geometry`` (area geodesic for geographic CRSs).
    """
    import geopandas as gpd
    import rasterio.features
    from shapely.geometry import shape

    if isinstance(class_map, (str, Path)):
        arr, transform, crs, file_nodata = read_class_map(class_map)
        nodata = file_nodata if nodata is None else nodata
    elif hasattr(class_map, "rio"):
        arr = np.asarray(class_map.values)  # one 2-D class map, not a cube
        transform, crs = class_map.rio.transform(), class_map.rio.crs.to_string()
        nodata = class_map.rio.nodata if nodata is None else nodata
    else:
        arr = np.asarray(class_map)
    if arr.ndim != 2 or transform is None or crs is None:
        raise InputError("class map must be 2-D with a transform and a CRS",
                         "pass a GeoTIFF or a georeferenced DataArray")  # fmt: skip
    if arr.dtype.kind == "f" and np.any(np.isfinite(arr) & (arr != np.round(arr))):
        raise DataError("class map holds non-integer values", "pass class ids, not probabilities")
    if arr.dtype not in (np.uint8, np.int16, np.uint16, np.int32):
        arr = arr.astype(np.int32)
    mask = np.ones(arr.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        mask &= arr != nodata
    for s in skip:
        mask &= arr != s
    geoms, ids = [], []
    for geom, value in rasterio.features.shapes(arr, mask=mask, transform=transform,
                                                connectivity=connectivity):  # fmt: skip
        geoms.append(shape(geom))
        ids.append(int(value))
    gdf = gpd.GeoDataFrame({"class_id": np.array(ids, dtype=np.int32)}, geometry=geoms, crs=crs)
    table = classes or ClassTable(())
    gdf["class_name"] = [table.name_of(i) for i in ids]
    gdf["area_m2"] = _areas(gdf.geometry, crs)
    return gdf[["class_id", "class_name", "area_m2", "geometry"]]


def _existing(path: Path) -> list[str]:
    return [x.name for x in list_layers(path, details=False)] if path.exists() else []


def write_vector_layer(gdf, path: str | Path, layer: str, *, overwrite: bool = False) -> Path:
    """Add ``gdf`` as layer ``layer`` of the GeoPackage ``path`` (created if missing).

    Other layers are left untouched; an existing ``layer`` is refused unless ``overwrite``.
    """
    import pyogrio

    path = Path(path)
    if path.exists():
        require_gpkg(path)
    existing = _existing(path)
    if layer in existing and not overwrite:
        raise DataError(f"layer {layer!r} already exists in {path}",
                        "choose another layer name or pass --overwrite")  # fmt: skip
    opts = {"OVERWRITE": "YES"} if layer in existing else {}
    pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG", layer_options=opts)
    return path


def join_csv(
    path: str | Path, layer: str, csv: str | Path, *, key: str, csv_key: str | None = None
):
    """LEFT JOIN a vector layer with a CSV on a key column (every feature kept, in order).

    Parameters
    ----------
    path, layer
        GeoPackage and layer (checked).
    csv
        CSV file with a header row.
    key
        Key column of the layer.
    csv_key
        Key column of the CSV (default: ``key``).

    Returns
    -------
    geopandas.GeoDataFrame
        The layer with the CSV columns added (``_csv`` suffix on name clashes);
        ``attrs["matched"]`` counts the features that found a CSV row.

    Raises
    ------
    InputError
        Missing layer/column/file.
    DataError
        Duplicate keys in the CSV (a LEFT JOIN would duplicate features).
    """
    import pandas as pd
    import pyogrio

    path = require_gpkg(path)
    check_layer(path, layer, kind="vector")
    check_columns(path, layer, [key])
    csv = Path(csv)
    if not csv.exists():
        raise InputError(f"CSV {csv} does not exist", "check the path")
    table = pd.read_csv(csv)
    csv_key = csv_key or key
    if csv_key not in table.columns:
        raise InputError(
            f"column {csv_key!r} not found in {csv}", f"existing columns: {list(table.columns)}"
        )
    dup = table[csv_key][table[csv_key].duplicated()].unique().tolist()
    if dup:
        raise DataError(f"key {csv_key!r} of {csv} is not unique (e.g. {dup[:5]})",
                        "aggregate the CSV to one row per key first")  # fmt: skip
    gdf = pyogrio.read_dataframe(path, layer=layer)
    left, right = gdf[key], table[csv_key]
    if left.dtype != right.dtype:

        def norm(s):
            return s.map(lambda v: None if pd.isna(v) else
                         str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))  # fmt: skip

        left, right = norm(left), norm(right)
    extra = table.drop(columns=[csv_key])
    extra.columns = [c if c not in gdf.columns else f"{c}_csv" for c in extra.columns]
    extra["__key"] = right.to_numpy()
    merged = gdf.assign(__key=left.to_numpy()).merge(extra, on="__key", how="left", sort=False)
    matched = int(merged["__key"].isin(set(right.dropna())).sum())
    out = merged.drop(columns="__key")
    out = out[[c for c in out.columns if c != "geometry"] + ["geometry"]]
    out.attrs["matched"] = matched
    return out


def append_layer(
    src: str | Path, dst: str | Path, *, layer: str | None = None, name: str | None = None,
    date: str | None = None, overwrite: bool = False,
) -> str:  # fmt: skip
    """Copy one layer into the GeoPackage ``dst`` without touching its other layers.

    Parameters
    ----------
    src
        A GeoPackage (then ``layer`` names the vector or raster layer), a GeoTIFF/COG
        (one raster layer) or any vector file pyogrio reads.
    dst
        Target GeoPackage (created if missing).
    layer
        Source layer.
    name
        Target layer name (default: the source layer or file stem).
    date
        ``RASTER_DATE`` for a raster (default: the source's date, if any).
    overwrite
        Replace an existing target layer.

    Returns
    -------
    str
        The target layer name.
    """
    import pyogrio

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"{src} does not exist", "check the path")
    if dst.exists():
        require_gpkg(dst)
    is_gpkg = src.suffix.lower() == ".gpkg"
    if is_gpkg:
        if layer is None:
            raise InputError(f"{src} is a GeoPackage: name the layer to append",
                             f"layers: {[x.name for x in list_layers(src, details=False)]}")  # fmt: skip
        info = check_layer(src, layer)
        kind = info.kind
    else:
        kind = "raster" if src.suffix.lower() in (".tif", ".tiff") else "vector"
    target = name or layer or src.stem
    if target in _existing(dst) and not overwrite:
        raise DataError(f"layer {target!r} already exists in {dst}",
                        "choose another name or pass --overwrite")  # fmt: skip
    if kind == "vector":
        gdf = pyogrio.read_dataframe(src, layer=layer)
        write_vector_layer(gdf, dst, target, overwrite=overwrite)
        return target
    if kind != "raster":
        raise InputError(
            f"layer {layer!r} of {src} is an attribute table", "append a vector or raster layer"
        )
    _append_raster(src, dst, layer if is_gpkg else None, target, date, overwrite)
    return target


def _source_date(src: Path, info, tags: dict):
    """The date of a raster being appended: the layer's date, or the GeoTIFF's (tags, name)."""
    from eoflow.gpkg.dates import parse_date
    from eoflow.sources.geotiff import file_date

    if info is not None:
        return parse_date(info.date)
    try:
        return file_date(src, tags, None)
    except InputError:
        return None  # an undated raster stays undated


def _append_raster(src: Path, dst: Path, layer: str | None, target: str, date, overwrite) -> None:
    import rasterio

    from eoflow.gpkg.dates import format_date, parse_date
    from eoflow.gpkg.raster import WRITABLE_DTYPES

    href = f"GPKG:{src}:{layer}" if layer else str(src)
    info = check_layer(src, layer) if layer else None
    opts = info.open_options() if info else {}
    with open_checked(href, open_options=opts) as ds:
        data, profile, tags = ds.read(), ds.profile, ds.tags()
    dtype = str(data.dtype)
    if dtype not in WRITABLE_DTYPES or (dtype != "uint8" and data.shape[0] > 1):
        raise DataError(f"{href} is {data.shape[0]} band(s) of {dtype}; a GeoPackage raster layer "
                        f"holds up to 4 uint8 bands or 1 band of {WRITABLE_DTYPES[1:]}",
                        "split bands or cast first (eoflow export rasters)")  # fmt: skip
    when = parse_date(date) if date else _source_date(src, info, tags)
    if date and when is None:
        raise InputError(f"date {date!r} not understood", "use YYYY-MM-DD")
    keep = {k: v for k, v in tags.items() if k.startswith(("RASTER_DATE", "EOFLOW_"))}
    if when is not None:
        keep["RASTER_DATE"] = format_date(when)
    if dtype == "uint8":
        keep["EOFLOW_BAND_COUNT"] = str(data.shape[0])
    if overwrite and target in _existing(dst):
        raise DataError(f"raster layer {target!r} exists in {dst}; GDAL cannot replace raster "
                        "tables in place", "write it under another name")  # fmt: skip
    create = {"RASTER_TABLE": target}
    if dst.exists():
        create["APPEND_SUBDATASET"] = "YES"
    if dtype == "float32":
        create["TILE_FORMAT"] = "TIFF"
    out = {"driver": "GPKG", "width": profile["width"], "height": profile["height"],
           "count": data.shape[0], "dtype": dtype, "crs": profile["crs"],
           "transform": profile["transform"]}  # fmt: skip
    if profile.get("nodata") is not None and dtype != "uint8":
        out["nodata"] = profile["nodata"]
    with rasterio.open(dst, "w", **out, **create) as w:
        w.write(data)
        w.update_tags(**keep)
