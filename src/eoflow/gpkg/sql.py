"""Spatial SQL over GeoPackages: pixels in polygons and values at points.

Engine
------
SpatiaLite 5 (Debian's ``libsqlite3-mod-spatialite``, installed by ``make setup``) loaded into
`apsw <https://rogerbinns.github.io/apsw/>`_ (PyPI wheel with its own recent SQLite, the ``sql``
extra). Why this one:

* Python's built-in ``sqlite3`` here is compiled without extension loading, so it cannot load
  SpatiaLite; apsw can.
* DuckDB's ``spatial`` extension is downloaded at run time (``INSTALL spatial``), which fails
  offline and on locked-down machines; SpatiaLite is a system package installed once by
  ``make setup``.
* Measured (2 shared CPU cores): all 88 polygons of ``LULC.gpkg`` on the 101 x 100 TestEOPatch
  grid (10,100 pixels) in about 0.2 s; the 193 LPIS parcels (EPSG:2154) on a 2 m grid
  (1.57 million pixels) in 1.4 s. The pixel sets equal ``rasterio.features.rasterize`` exactly
  (tested per polygon). A first version tested every candidate centre with
  ``ST_Contains(polygon, AsGPB(MakePoint(...)))``: same sets, 10x slower (13 s for the parcels).

GeoPackage geometries are "GPB" blobs, not SpatiaLite blobs. The connection runs
``SELECT EnableGpkgMode()`` so functions read GPB directly (see the quirks below).
``ST_Transform`` cannot find SRIDs in GeoPackage mode (no
``spatial_ref_sys``), so reprojection uses its PROJ-string form
``ST_Transform(g, srid, NULL, 'EPSG:from', 'EPSG:to')``.

Process safety: SQLite loads extensions ``RTLD_GLOBAL``; :func:`connect` therefore imports shapely,
pyproj, rasterio and pyogrio (which bundle their own GEOS/PROJ/GDAL) *before* loading SpatiaLite,
so they never bind to the system GEOS/PROJ that SpatiaLite brings in (measured failure otherwise:
shapely's WKB writer raising "WKB output dimension must be 2 or 3").

Safety: layer and column names are checked against the file's own lists
(:mod:`eoflow.gpkg.catalog`) and quoted; every value (ids, filter values, grid numbers, CRS
strings) is bound as a parameter, never formatted into SQL.

How a pixels-in-polygon query works: the polygons are selected (by id and/or an attribute filter)
and reprojected to the grid CRS once (a materialised CTE); a recursive CTE enumerates the grid rows
of each polygon's bounding box; SpatiaLite intersects the polygon with the horizontal line through
that row's pixel centres (``ST_Intersection``), and the pixel centres strictly inside each
resulting segment are the row's pixels (GDAL's centre-inside rasterisation rule; a centre exactly
on the boundary is outside, as with ``ST_Contains``). The cube values for all dates and bands at
those pixels are then read lazily (only the chunks touched) with vectorised indexing.

GeoPackage-mode quirks (SpatiaLite 5.0.1, measured): ``MakePoint``/``MakeLine`` return SpatiaLite
blobs that GPKG-mode functions reject (``ST_Contains`` answers -1, ``ST_Intersection`` NULL),
while ``GeomFromText`` returns GPKG blobs; so the row lines are built with
``GeomFromText(printf('LINESTRING(%.17g ...)'))`` (17 digits: exact doubles); a SpatiaLite
blob would need ``AsGPB(...)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eoflow.errors import InputError
from eoflow.geo.tiles import Tile
from eoflow.gpkg.catalog import LayerInfo, check_columns, check_layer, quote_ident, require_gpkg

__all__ = [
    "AttributeFilter",
    "cells_in_polygons",
    "connect",
    "parse_filter",
    "pixels_in_polygons",
    "point_cells",
    "values_at_points",
    "write_table",
]

_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
        "~": "LIKE"}  # fmt: skip


@dataclass(frozen=True)
class AttributeFilter:
    """``column op value`` (op one of ``= != < <= > >= LIKE``); the value is bound, never inlined."""

    column: str
    op: str
    value: object


def parse_filter(text: str) -> AttributeFilter:
    """Parse ``"code_cultu=MIS"``, ``"surf_parc>=2.5"`` or ``"LULC_NAME~forest%"`` (LIKE).

    Raises
    ------
    InputError
        The text is not ``COLUMN<op>VALUE``.
    """
    m = re.fullmatch(r"\s*([^=<>!~\s]+)\s*(==|!=|<>|<=|>=|=|<|>|~)\s*(.*?)\s*", text or "")
    if not m:
        raise InputError(f"filter {text!r} not understood",
                         "write COLUMN=VALUE (also != < <= > >= and ~ for LIKE)")  # fmt: skip
    raw: object = m.group(3)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    else:
        for conv in (int, float):
            try:
                raw = conv(raw)
                break
            except ValueError:
                continue
    return AttributeFilter(m.group(1), _OPS[m.group(2)], raw)


def _spatialite_name() -> str:
    return os.environ.get("EOFLOW_SPATIALITE", "mod_spatialite")


def _bind_bundled_libraries() -> None:
    """Import the wheels that bundle GEOS/PROJ/GDAL before SpatiaLite is loaded.

    SQLite loads extensions with ``RTLD_GLOBAL``, so SpatiaLite's system GEOS (3.11) and PROJ
    enter the global symbol scope. A wheel loaded *afterwards* (shapely with GEOS 3.14, pyproj,
    rasterio, pyogrio) would then bind to the system copies: shapely fails with "WKB output
    dimension must be 2 or 3" and the process can abort at exit. Loaded first, they keep their
    own (Python loads extension modules with ``RTLD_NOW``).
    """
    import pyogrio  # noqa: F401
    import pyproj  # noqa: F401
    import rasterio  # noqa: F401
    import shapely  # noqa: F401


def connect(path: str | Path, *, readonly: bool = True):
    """An apsw connection to ``path`` with SpatiaLite loaded and GeoPackage mode on.

    Raises
    ------
    InputError
        apsw or SpatiaLite missing (the hint says how to install them), or not a GeoPackage.
    """
    path = require_gpkg(path)
    try:
        import apsw
    except ImportError:
        raise InputError("spatial SQL needs the apsw package",
                         "pip install 'eoflow[sql]' (or make setup)") from None  # fmt: skip
    _bind_bundled_libraries()
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    con = apsw.Connection(str(path), flags=flags)
    try:
        con.enable_load_extension(True)
        con.load_extension(_spatialite_name())
    except apsw.Error as exc:
        con.close()
        raise InputError(
            f"SpatiaLite ({_spatialite_name()}) cannot be loaded: {exc}",
            "apt-get install libsqlite3-mod-spatialite (make setup does it) or set "
            "EOFLOW_SPATIALITE to the mod_spatialite library",
        ) from None
    con.execute("SELECT EnableGpkgMode()")
    return con


def _pk_column(con, layer: str) -> str:
    for row in con.execute(f"PRAGMA table_info({quote_ident(layer)})"):
        if row[5] == 1:
            return str(row[1])
    return "rowid"


def _shapes_sql(
    con, path: Path, info: LayerInfo, tile: Tile, ids: Sequence | None,
    where: AttributeFilter | None, id_column: str | None,
) -> tuple[str, dict, str]:  # fmt: skip
    """``SELECT sid, g FROM layer WHERE ...`` with g in the tile CRS; returns (sql, params, id col)."""
    if info.kind != "vector" or not info.geometry_column:
        raise InputError(f"layer {info.name!r} of {path} has no geometry column",
                         "choose a vector (features) layer")  # fmt: skip
    if info.crs is None:
        raise InputError(f"layer {info.name!r} of {path} has no EPSG CRS",
                         "assign one with ogr2ogr -a_srs EPSG:...")  # fmt: skip
    wanted = [c for c in (id_column, where.column if where else None) if c]
    check_columns(path, info.name, wanted)
    idcol = id_column or _pk_column(con, info.name)
    geom = quote_ident(info.geometry_column)
    params: dict = {"dst_srid": tile.epsg, "src_crs": info.crs, "dst_crs": tile.crs}
    g = (
        geom
        if info.crs == tile.crs
        else f"ST_Transform({geom}, :dst_srid, NULL, :src_crs, :dst_crs)"
    )
    conds = [f"{geom} IS NOT NULL"]
    if ids is not None:
        names = []
        for k, v in enumerate(ids):
            params[f"id{k}"] = v
            names.append(f":id{k}")
        conds.append(f"{quote_ident(idcol)} IN ({', '.join(names) or 'NULL'})")
    if where is not None:
        if where.op not in _OPS.values():
            raise InputError(f"filter operator {where.op!r} not allowed",
                             f"use one of {sorted(set(_OPS.values()))}")  # fmt: skip
        params["wval"] = where.value
        conds.append(f"{quote_ident(where.column)} {where.op} :wval")
    sql = (f"SELECT rowid AS k, {quote_ident(idcol)} AS sid, {g} AS g FROM {quote_ident(info.name)} "
           f"WHERE {' AND '.join(conds)}")  # fmt: skip
    return sql, params, idcol


def _grid_params(tile: Tile) -> dict:
    a, b, c, d, e, f = tile.transform
    if b != 0 or d != 0 or e >= 0:
        raise InputError(f"tile {tile.tile_id} is rotated or not north-up",
                         "warp it to a north-up grid first")  # fmt: skip
    return {"a": a, "c": c, "e": e, "f": f, "w": tile.width, "h": tile.height, "srid": tile.epsg}


_ROWS_SQL = """
WITH RECURSIVE shapes AS MATERIALIZED ({shapes}),
win AS MATERIALIZED (
  SELECT k, sid, g, MbrMinX(g) - :a AS xa, MbrMaxX(g) + :a AS xb,
    max(0, CAST((MbrMaxY(g) - :f) / :e AS INTEGER)) AS r0,
    min(:h - 1, CAST((MbrMinY(g) - :f) / :e AS INTEGER)) AS r1
  FROM shapes WHERE g IS NOT NULL AND MbrMaxY(g) > :f + :e * :h AND MbrMinY(g) < :f
    AND MbrMaxX(g) > :c AND MbrMinX(g) < :c + :a * :w
),
rr(k, r) AS (SELECT k, r0 FROM win UNION ALL
             SELECT rr.k, rr.r + 1 FROM rr JOIN win ON win.k = rr.k WHERE rr.r < win.r1)
SELECT win.sid, rr.r, AsBinary(ST_Intersection(win.g, GeomFromText(printf(
    'LINESTRING(%.17g %.17g, %.17g %.17g)', win.xa, :f + :e * (rr.r + 0.5), win.xb,
    :f + :e * (rr.r + 0.5)), :srid)))
FROM win JOIN rr ON rr.k = win.k
ORDER BY win.k, rr.r
"""


def _expand_row_segments(rows: list, tile: Tile):
    """Row intersections (WKB lines) -> one ``(feature_id, row, col)`` per pixel centre inside.

    A centre is inside when it lies strictly between the ends of a segment (a centre on the
    polygon boundary is outside, as with ``ST_Contains``); point parts (tangents) hold none.
    """
    import pandas as pd
    import shapely

    sid = np.array([r[0] for r in rows], dtype=object)
    row = np.array([r[1] for r in rows], dtype=np.int64)
    parts, idx = shapely.get_parts(shapely.from_wkb([r[2] for r in rows]), return_index=True)
    lines = shapely.get_type_id(parts) == 1
    parts, idx = parts[lines], idx[lines]
    bounds = shapely.bounds(parts).reshape(-1, 4)
    a, _, c = tile.transform[:3]
    first = np.maximum(np.floor((bounds[:, 0] - c) / a - 0.5).astype(np.int64) + 1, 0)
    last = np.minimum(np.ceil((bounds[:, 2] - c) / a - 0.5).astype(np.int64) - 1, tile.width - 1)
    n = np.clip(last - first + 1, 0, None)
    seg = np.repeat(np.arange(len(n)), n)
    offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    cols = first[seg] + offset
    order = np.lexsort((cols, idx[seg]))  # SQL rows come ordered by feature, then row
    return pd.DataFrame({"feature_id": sid[idx][seg][order], "row": row[idx][seg][order],
                         "col": cols[order]})  # fmt: skip


def cells_in_polygons(
    path: str | Path, layer: str, tile: Tile, *, ids: Sequence | None = None,
    where: AttributeFilter | str | None = None, id_column: str | None = None,
):  # fmt: skip
    """Grid cells whose centre lies inside the selected polygons (SpatiaLite).

    Parameters
    ----------
    path, layer
        GeoPackage and polygon layer (checked against the file).
    tile
        The grid.
    ids
        Values of ``id_column`` (default: the layer's primary key, ``fid``) to select.
    where
        Attribute filter (:class:`AttributeFilter` or ``"COLUMN=VALUE"``).
    id_column
        Identifier column reported as ``feature_id``.

    Returns
    -------
    pandas.DataFrame
        Columns ``feature_id, row, col, x, y`` (pixel centres in the tile CRS).
    """
    import pandas as pd

    path = require_gpkg(path)
    info = check_layer(path, layer, kind="vector")
    where = parse_filter(where) if isinstance(where, str) else where
    con = connect(path)
    try:
        shapes, params, idcol = _shapes_sql(con, path, info, tile, ids, where, id_column)
        params.update(_grid_params(tile))
        rows = con.execute(_ROWS_SQL.format(shapes=shapes), params).fetchall()
    finally:
        con.close()
    df = _expand_row_segments(rows, tile) if rows else pd.DataFrame(
        {"feature_id": [], "row": np.array([], np.int64), "col": np.array([], np.int64)})  # fmt: skip

    a, _, c, _, e, f = tile.transform
    df["x"] = c + a * (df["col"].to_numpy() + 0.5)
    df["y"] = f + e * (df["row"].to_numpy() + 0.5)
    df.attrs.update(id_column=idcol, layer=layer, source=str(path))
    return df


def point_cells(
    path: str | Path, layer: str, tile: Tile, *, where: AttributeFilter | str | None = None,
    id_column: str | None = None,
):  # fmt: skip
    """Grid cells of a point layer's points (reprojected to the tile CRS in SQL).

    Returns
    -------
    pandas.DataFrame
        ``feature_id, px, py, row, col, x, y, inside``: ``px, py`` the point, ``x, y`` the pixel
        centre; ``inside`` False for points off the grid (their row/col are -1).
    """
    import pandas as pd

    path = require_gpkg(path)
    info = check_layer(path, layer, kind="vector")
    if (info.geometry_type or "").upper() != "POINT":
        raise InputError(f"layer {layer!r} of {path} holds {info.geometry_type}, not points",
                         "choose a point layer (or use pixels-in-polygon)")  # fmt: skip
    where = parse_filter(where) if isinstance(where, str) else where
    con = connect(path)
    try:
        shapes, params, idcol = _shapes_sql(con, path, info, tile, None, where, id_column)
        sql = f"SELECT sid, X(g), Y(g) FROM ({shapes}) ORDER BY k"
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    df = pd.DataFrame(rows, columns=["feature_id", "px", "py"])
    a, _, c, _, e, f = tile.transform
    px, py = df["px"].to_numpy(float), df["py"].to_numpy(float)
    col = np.floor((px - c) / a).astype(np.int64)
    row = np.floor((py - f) / e).astype(np.int64)
    inside = np.isfinite(px) & (row >= 0) & (row < tile.height) & (col >= 0) & (col < tile.width)
    df["row"] = np.where(inside, row, -1)
    df["col"] = np.where(inside, col, -1)
    df["x"] = c + a * (df["col"].to_numpy() + 0.5)
    df["y"] = f + e * (df["row"].to_numpy() + 0.5)
    df["inside"] = inside
    df.attrs.update(id_column=idcol, layer=layer, source=str(path))
    return df


def _values_long(cube, cells, *, point: bool):
    """Attach all dates/bands of ``cube`` at ``cells`` (long layout: one row per cell and date)."""
    import geopandas as gpd
    import xarray as xr

    from eoflow.cube.model import cube_tile

    tile = cube_tile(cube)
    ok = cells[cells["row"] >= 0].reset_index(drop=True)
    rows = xr.DataArray(ok["row"].to_numpy(), dims="pixel")
    cols = xr.DataArray(ok["col"].to_numpy(), dims="pixel")
    picked = cube.isel(y=rows, x=cols).compute()  # only the chunks holding these pixels are read
    has_time = "time" in cube.dims
    times = cube["time"].to_numpy() if has_time else np.array([np.datetime64("NaT", "ns")])
    nt, npx = len(times), len(ok)
    base = ok.loc[np.tile(np.arange(npx), nt)].reset_index(drop=True)
    base.insert(base.columns.get_loc("row"), "time", np.repeat(times, npx))
    for var in cube.data_vars:
        v = picked[var]
        vals = v.transpose("time", "pixel").to_numpy() if "time" in v.dims else np.tile(
            v.to_numpy()[None], (nt, 1))  # fmt: skip
        base[var] = vals.reshape(-1)
    gx, gy = (base["px"], base["py"]) if point else (base["x"], base["y"])
    gdf = gpd.GeoDataFrame(base, geometry=gpd.points_from_xy(gx, gy), crs=tile.crs)
    gdf.attrs.update(cells.attrs)
    gdf.attrs["tile_id"] = tile.tile_id
    gdf.attrs["dropped"] = int((cells["row"] < 0).sum())
    return gdf if has_time else gdf.drop(columns="time")


def pixels_in_polygons(
    path: str | Path, layer: str, cube, *, ids: Sequence | None = None,
    where: AttributeFilter | str | None = None, id_column: str | None = None,
):  # fmt: skip
    """Every pixel centre of ``cube`` inside the selected polygons, with all dates and bands.

    Parameters
    ----------
    path, layer
        GeoPackage and polygon layer.
    cube
        A cube (:mod:`eoflow.cube.model`), e.g. from ``load_gpkg_raster_cube``.
    ids, where, id_column
        Polygon selection, see :func:`cells_in_polygons`.

    Returns
    -------
    geopandas.GeoDataFrame
        Long layout: ``feature_id, time, row, col, x, y, <one column per variable>, geometry``
        (pixel-centre points in the cube CRS), one row per pixel and date.
    """
    from eoflow.cube.model import cube_tile

    cells = cells_in_polygons(
        path, layer, cube_tile(cube), ids=ids, where=where, id_column=id_column
    )
    return _values_long(cube, cells, point=False)


def values_at_points(
    path: str | Path, layer: str, cube, *, where: AttributeFilter | str | None = None,
    id_column: str | None = None,
):  # fmt: skip
    """All dates and bands of ``cube`` at the points of a point layer.

    Points off the grid are dropped and counted in ``attrs["dropped"]``.

    Returns
    -------
    geopandas.GeoDataFrame
        ``feature_id, px, py, time, row, col, x, y, inside, <variables>, geometry`` (the points).
    """
    from eoflow.cube.model import cube_tile

    cells = point_cells(path, layer, cube_tile(cube), where=where, id_column=id_column)
    return _values_long(cube, cells, point=True)


def write_table(gdf, out: str | Path, *, layer: str | None = None) -> Path:
    """Write a query result as Parquet (GeoParquet), CSV (WKT geometry) or a GeoPackage layer.

    Raises
    ------
    InputError
        Unknown extension.
    """
    import pyogrio

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        gdf.to_parquet(out)
    elif suffix == ".csv":
        df = gdf.drop(columns="geometry")
        df["wkt"] = gdf.geometry.to_wkt()
        df.to_csv(out, index=False)
    elif suffix == ".gpkg":
        g = gdf.copy()
        if "time" in g:
            g["time"] = g["time"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        name = layer or "query"
        if out.exists() and name in [str(n) for n, _ in pyogrio.list_layers(out)]:
            raise InputError(
                f"layer {name!r} already exists in {out}", "choose another --out-layer"
            )
        pyogrio.write_dataframe(g, out, layer=name, driver="GPKG", append=out.exists())
    else:
        raise InputError(f"output {out} has an unknown type", "use .parquet, .csv or .gpkg")
    return out
