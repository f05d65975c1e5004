"""What a GeoPackage holds: its layers, their kind, CRS, extent, size and date.

The catalogue is read from the GeoPackage's own tables (``gpkg_contents``,
``gpkg_geometry_columns``, ``gpkg_spatial_ref_sys``, ``gpkg_metadata``) with Python's built-in
``sqlite3`` (no extension needed), opened read-only. Raster band count and dtype come from GDAL
(rasterio), which is how every raster layer is read later.

Layer dates follow a documented order: the GDAL metadata item ``RASTER_DATE`` of the table (as
``gdal_translate -of GPKG -mo RASTER_DATE=YYYY-MM-DD`` writes it), then an ISO date in the layer
description, then in the layer name.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eoflow.errors import InputError
from eoflow.gpkg.dates import format_date, parse_date

__all__ = [
    "RASTER_TYPES",
    "LayerInfo",
    "check_columns",
    "check_layer",
    "layer_columns",
    "list_layers",
    "open_catalog",
    "quote_ident",
    "require_gpkg",
]

#: ``gpkg_contents.data_type`` values that are rasters.
RASTER_TYPES = ("tiles", "2d-gridded-coverage")
_GPKG_APP_IDS = {0x47504B47, 0x47503130}  # "GPKG", "GP10"


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a GeoPackage."""

    name: str
    kind: str
    """``"vector"``, ``"raster"`` or ``"attributes"``."""
    data_type: str
    """As in ``gpkg_contents`` (``features``, ``tiles``, ``2d-gridded-coverage``, ``attributes``)."""
    crs: str | None = None
    extent: tuple[float, float, float, float] | None = None
    description: str = ""
    geometry_type: str | None = None
    geometry_column: str | None = None
    srs_id: int | None = None
    feature_count: int | None = None
    band_count: int | None = None
    dtype: str | None = None
    width: int | None = None
    height: int | None = None
    date: str | None = None
    """ISO date (``YYYY-MM-DD`` or with time) when the layer has one."""
    date_source: str | None = None
    """Where the date came from: ``RASTER_DATE``, ``description`` or ``name``."""
    metadata: dict[str, str] = field(default_factory=dict)
    tile_bands: int | None = None
    """Data bands of a ``tiles`` layer: ``EOFLOW_BAND_COUNT`` metadata, else read from the first
    tile (PNG grey/grey+alpha -> 1, RGB/RGBA -> 3, JPEG/WebP -> 3; no tile at all -> 1);
    None = GDAL's default (4)."""

    def open_options(self) -> dict[str, str]:
        """rasterio open options reading exactly the data bands of this layer."""
        return {"BAND_COUNT": str(self.tile_bands)} if self.tile_bands else {}

    @property
    def datetime(self) -> np.datetime64 | None:
        """The date as ``datetime64[s]``."""
        return None if self.date is None else np.datetime64(self.date, "s")

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        d = asdict(self)
        d["extent"] = list(self.extent) if self.extent else None
        return d

    def summary(self) -> str:
        """``geometry type`` or ``bands x dtype`` for listings."""
        if self.kind == "vector":
            return self.geometry_type or "?"
        if self.kind == "raster":
            return f"{self.band_count}x{self.dtype}"
        return "table"

    def size(self) -> str:
        """``N features`` or ``W x H px``."""
        if self.kind == "raster":
            return f"{self.width}x{self.height} px"
        return (
            f"{self.feature_count} rows"
            if self.kind == "attributes"
            else f"{self.feature_count} features"
        )


def quote_ident(name: str) -> str:
    """SQL-quote an identifier (``"a""b"``); use only on names checked against the file."""
    return '"' + str(name).replace('"', '""') + '"'


def require_gpkg(path: str | Path) -> Path:
    """Check ``path`` is an existing GeoPackage (SQLite with GeoPackage tables).

    Raises
    ------
    InputError
        Missing file, empty file, not SQLite, or SQLite without ``gpkg_contents``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"GeoPackage {path} does not exist", "check the path")
    if path.is_dir() or path.stat().st_size < 100:
        raise InputError(f"{path} is not a GeoPackage (empty or a folder)", "pass a .gpkg file")
    with path.open("rb") as fh:
        head = fh.read(100)
    if not head.startswith(b"SQLite format 3\x00"):
        raise InputError(
            f"{path} is not a GeoPackage (not an SQLite file)",
            "convert it with ogr2ogr -f GPKG / gdal_translate -of GPKG",
        )
    app_id = int.from_bytes(head[68:72], "big")
    with closing(_connect(path)) as con:
        has_contents = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='gpkg_contents'"
        ).fetchone()
    if not has_contents and app_id not in _GPKG_APP_IDS:
        raise InputError(
            f"{path} is an SQLite file without GeoPackage tables (gpkg_contents)",
            "pass a GeoPackage written by GDAL/QGIS",
        )
    return path


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)


def open_catalog(path: str | Path) -> sqlite3.Connection:
    """A read-only stdlib ``sqlite3`` connection to a checked GeoPackage."""
    return _connect(require_gpkg(path))


def _crs_of(con: sqlite3.Connection, srs_id: int | None) -> str | None:
    if srs_id is None:
        return None
    row = con.execute(
        "SELECT organization, organization_coordsys_id FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    if row and row[0] and str(row[0]).upper() == "EPSG" and row[1] and row[1] > 0:
        return f"EPSG:{row[1]}"
    return None if srs_id <= 0 else f"EPSG:{srs_id}"


def _gdal_metadata(con: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Default-domain GDAL metadata items per table (from ``gpkg_metadata``)."""
    has = con.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' "
        "AND name IN ('gpkg_metadata', 'gpkg_metadata_reference')"
    ).fetchone()[0]
    if has != 2:
        return {}
    out: dict[str, dict[str, str]] = {}
    rows = con.execute(
        "SELECT r.table_name, m.metadata FROM gpkg_metadata_reference r "
        "JOIN gpkg_metadata m ON m.id = r.md_file_id "
        "WHERE r.reference_scope = 'table' AND m.md_standard_uri = 'http://gdal.org' "
        "AND m.mime_type = 'text/xml'"
    ).fetchall()
    for table, xml in rows:
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            continue
        items = out.setdefault(str(table), {})
        for md in root.iter("Metadata"):
            if md.get("domain") not in (None, ""):
                continue
            for mdi in md.iter("MDI"):
                if mdi.get("key"):
                    items[mdi.get("key")] = mdi.text or ""
    return out


def _layer_date(name: str, description: str, md: dict[str, str]) -> tuple[str | None, str | None]:
    for source, text in (("RASTER_DATE", md.get("RASTER_DATE")), ("description", description),
                         ("name", name)):  # fmt: skip
        value = parse_date(text)
        if value is not None:
            return format_date(value), source
    return None, None


def _tile_bands(con: sqlite3.Connection, name: str, md: dict[str, str]) -> int | None:
    """Data bands of a ``tiles`` table (see :attr:`LayerInfo.tile_bands`)."""
    if md.get("EOFLOW_BAND_COUNT", "").isdigit():
        return int(md["EOFLOW_BAND_COUNT"])
    try:
        row = con.execute(f"SELECT tile_data FROM {quote_ident(name)} LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return 1  # GDAL writes no tile for all-empty data: nothing to read in any band
    blob = bytes(row[0]) if row[0] is not None else b""
    if blob.startswith(b"\x89PNG\r\n\x1a\n") and len(blob) > 25:
        return {0: 1, 3: None, 4: 1, 2: 3, 6: 3}.get(blob[25])  # PNG colour type
    if blob.startswith(b"\xff\xd8") or blob[8:12] == b"WEBP":
        return 3
    return None


def _raster_bands(path: Path, name: str, opts: dict[str, str]) -> tuple[int, str, int, int]:
    from eoflow.gpkg.lazy import open_checked

    href = f"GPKG:{path}:{name}"
    with open_checked(href, label=f"{path}:{name}", open_options=opts) as src:
        return src.count, src.dtypes[0], src.width, src.height


def list_layers(
    path: str | Path, *, kind: str | None = None, match: str | None = None, details: bool = True
) -> list[LayerInfo]:
    """All layers of a GeoPackage, in ``gpkg_contents`` order.

    Parameters
    ----------
    path
        GeoPackage file.
    kind
        Keep only ``"raster"``, ``"vector"`` or ``"attributes"`` layers.
    match
        Keep only layers whose name matches this shell glob (``NDVI_*``).
    details
        Count features and open rasters for band count/dtype/size (slower on huge files).

    Returns
    -------
    list of LayerInfo

    Raises
    ------
    InputError
        Not a GeoPackage, or an unknown ``kind``.
    """
    if kind not in (None, "raster", "vector", "attributes"):
        raise InputError(f"unknown layer type {kind!r}", "use raster, vector or attributes")
    path = require_gpkg(path)
    layers = []
    with closing(_connect(path)) as con:
        metadata = _gdal_metadata(con)
        geoms = {
            str(t): (c, g, s)
            for t, c, g, s in con.execute(
                "SELECT table_name, column_name, geometry_type_name, srs_id FROM gpkg_geometry_columns"
            )
        }
        rows = con.execute(
            "SELECT table_name, data_type, coalesce(description, ''), min_x, min_y, max_x, max_y, "
            "srs_id FROM gpkg_contents ORDER BY rowid"
        ).fetchall()
        for name, data_type, desc, x0, y0, x1, y1, srs_id in rows:
            name = str(name)
            lkind = ("raster" if data_type in RASTER_TYPES
                     else "vector" if data_type == "features" else "attributes")  # fmt: skip
            if kind and lkind != kind:
                continue
            if match and not fnmatch.fnmatchcase(name, match):
                continue
            md = metadata.get(name, {})
            info: dict = {
                "name": name, "kind": lkind, "data_type": str(data_type), "description": desc,
                "srs_id": srs_id, "crs": _crs_of(con, srs_id), "metadata": md,
                "extent": None if None in (x0, y0, x1, y1) else (x0, y0, x1, y1),
            }  # fmt: skip
            if lkind == "vector" and name in geoms:
                col, gtype, gsrs = geoms[name]
                info.update(geometry_column=col, geometry_type=gtype, srs_id=gsrs,
                            crs=_crs_of(con, gsrs))  # fmt: skip
            if lkind in ("vector", "attributes") and details:
                info["feature_count"] = con.execute(
                    f"SELECT count(*) FROM {quote_ident(name)}"
                ).fetchone()[0]
            if lkind == "raster":
                info["date"], info["date_source"] = _layer_date(name, desc, md)
                if data_type == "tiles":
                    info["tile_bands"] = _tile_bands(con, name, md)
                if details:
                    opts = {"BAND_COUNT": str(info["tile_bands"])} if info.get("tile_bands") else {}
                    (info["band_count"], info["dtype"], info["width"],
                     info["height"]) = _raster_bands(path, name, opts)  # fmt: skip
            layers.append(LayerInfo(**info))
    return layers


def check_layer(path: str | Path, layer: str, *, kind: str | None = None) -> LayerInfo:
    """The :class:`LayerInfo` of ``layer``, or :class:`InputError` listing the existing layers."""
    layers = list_layers(path, details=False)
    names = [lyr.name for lyr in layers]
    for lyr in layers:
        if lyr.name == layer:
            if kind and lyr.kind != kind:
                others = [x.name for x in layers if x.kind == kind]
                raise InputError(
                    f"layer {layer!r} of {path} is a {lyr.kind} layer, not {kind}",
                    f"{kind} layers: {others}",
                )
            return lyr
    raise InputError(f"layer {layer!r} not found in {path}", f"existing layers: {names}")


def layer_columns(path: str | Path, layer: str) -> list[str]:
    """Column names of a (checked) layer table, in table order."""
    check_layer(path, layer)
    with closing(open_catalog(path)) as con:
        return [str(r[1]) for r in con.execute(f"PRAGMA table_info({quote_ident(layer)})")]


def check_columns(path: str | Path, layer: str, columns: list[str]) -> list[str]:
    """Return ``columns`` if all exist in ``layer``, else :class:`InputError` listing them."""
    existing = layer_columns(path, layer)
    for col in columns:
        if col not in existing:
            raise InputError(
                f"column {col!r} not found in layer {layer!r} of {path}",
                f"existing columns: {existing}",
            )
    return existing
