"""Rasterise reference polygons onto tile grids, reading the layer in dask-geopandas partitions.

The layer is split into partitions whose spatial extents are computed once; each tile's task reads
only the partitions that intersect it, so a country's reference layer never loads whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from eoflow.errors import InputError
from eoflow.geo.tiles import Tile

__all__ = [
    "ReferenceLayer",
    "open_reference",
    "rasterize_tile",
    "reference_classes",
    "reference_labels",
]

_FEATURES_PER_PARTITION = 50_000


@dataclass
class ReferenceLayer:
    """A partitioned reference layer: the dask-geopandas frame and each partition's bounds."""

    path: str
    layer: str | None
    value_column: str
    frame: object  # dask_geopandas.GeoDataFrame
    bounds: np.ndarray  # (npartitions, 4) in the layer CRS
    crs: str
    repairs: list = None  # (fid, what was done) for each broken geometry
    parts: list = None  # one dask.delayed GeoDataFrame per partition (the frame's partitions)


def open_reference(
    path: str, *, layer: str | None = None, value_column: str = "LULC_ID"
) -> ReferenceLayer:
    """Open a reference layer lazily and index its partitions by extent."""
    import dask
    import dask_geopandas
    import pyogrio

    try:
        layers = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:
        raise InputError(f"reference file {path} cannot be opened: {' '.join(str(exc).split())[:160]}",
                         "give a GeoPackage with the reference polygons") from exc  # fmt: skip
    if not layers:
        raise InputError(f"reference file {path} has no tables", "add the polygon layer")
    if layer is None:
        layer = layers[0]
    elif layer not in layers:
        raise InputError(f"reference file {path} has no layer {layer!r}", f"layers: {layers}")
    info = pyogrio.read_info(path, layer=layer)
    if value_column not in list(info["fields"]):
        raise InputError(
            f"reference layer {layer!r} of {path} has no column {value_column!r}",
            f"columns: {list(info['fields'])}",
        )
    import dask.dataframe as dd
    import geopandas as gpd
    import pandas as pd

    n_feat = int(info["features"])
    n = max(1, int(np.ceil(n_feat / _FEATURES_PER_PARTITION)))
    size = max(1, -(-n_feat // n))
    parts = [
        dask.delayed(_read_partition)(path, layer, value_column, i * size, size) for i in range(n)
    ]
    meta = gpd.GeoDataFrame({value_column: pd.Series([], dtype="int64")},
                            geometry=gpd.GeoSeries([], crs=info["crs"]), crs=info["crs"])  # fmt: skip
    meta.index.name = "fid"
    frame = dask_geopandas.from_dask_dataframe(dd.from_delayed(parts, meta=meta, verify_meta=False))
    scans = dask.compute(*[dask.delayed(_scan_partition)(p) for p in parts])
    bounds = np.array([s[0] for s in scans]).reshape(-1, 4)
    layer_ref = ReferenceLayer(path, layer, value_column, frame, bounds, str(info["crs"]))
    layer_ref.repairs = [r for s in scans for r in s[1]]
    layer_ref.parts = parts
    return layer_ref


def _read_partition(path: str, layer: str, value_column: str, skip: int, count: int):
    """One partition, tolerant of broken geometries: each is fixed or dropped, never the layer."""
    import geopandas as gpd
    import pyogrio.raw
    import shapely

    meta, fids, geoms, fields = pyogrio.raw.read(
        path, layer=layer, columns=[value_column], skip_features=skip, max_features=count,
        return_fids=True,
    )  # fmt: skip
    wkb = np.asarray(geoms, dtype=object)
    strict = shapely.from_wkb(wkb, on_invalid="ignore")
    parsed = shapely.from_wkb(wkb, on_invalid="fix")
    notes = []
    for i, g in enumerate(parsed):
        if strict[i] is None and g is not None and not g.is_empty:
            notes.append((int(fids[i]), "repaired (unclosed ring closed)"))
        if wkb[i] is None or g is None or g.is_empty:
            notes.append((int(fids[i]), "dropped (missing or unreadable geometry)"))
            parsed[i] = None
        elif not g.is_valid:
            parsed[i] = shapely.make_valid(g)
            notes.append((int(fids[i]), f"repaired ({shapely.is_valid_reason(g)})"))
    values = np.asarray(fields[0])
    gdf = gpd.GeoDataFrame({value_column: values}, geometry=parsed, crs=meta["crs"],
                           index=pd_index(fids))  # fmt: skip
    gdf.attrs["repairs"] = notes
    return gdf[gdf.geometry.notna()]


def pd_index(fids):
    import pandas as pd

    return pd.Index(np.asarray(fids, dtype="int64"), name="fid")


def _scan_partition(part) -> tuple[tuple[float, float, float, float], list]:
    notes = list(part.attrs.get("repairs", []))
    if len(part) == 0:
        return (np.inf, np.inf, -np.inf, -np.inf), notes
    return tuple(part.total_bounds), notes


def _tile_bounds_in(tile: Tile, crs: str) -> tuple[float, float, float, float]:
    from pyproj import CRS, Transformer

    if CRS.from_user_input(crs) == CRS.from_user_input(tile.crs):
        return tile.bounds
    tr = Transformer.from_crs(tile.crs, crs, always_xy=True)
    return tr.transform_bounds(*tile.bounds, densify_pts=21)


def _burn(parts, tile: Tile, value_column: str, dtype: str) -> np.ndarray:
    import pandas as pd
    import shapely
    from rasterio.features import rasterize

    frames = [p for p in parts if len(p)]
    out = np.zeros(tile.shape, dtype=dtype)
    if not frames:
        return out
    gdf = pd.concat(frames).to_crs(tile.crs)
    gdf = gdf[gdf.intersects(shapely.box(*tile.bounds))]
    geoms = gdf.geometry.values
    shapes = [(g, int(v)) for g, v in zip(geoms, gdf[value_column].to_numpy()) if not g.is_empty]
    if shapes:
        rasterize(shapes, out=out, transform=tile.affine, all_touched=False)
    return out


def rasterize_tile(
    ref: ReferenceLayer, tile: Tile, *, chunk_px: int = 512, dtype: str = "uint16"
) -> xr.DataArray:
    """Lazy ``(y, x)`` raster of the reference values on ``tile`` (0 where no polygon).

    One task per tile reads only the partitions whose extent intersects the tile.
    """
    import dask
    import dask.array as da

    left, b, r, t = _tile_bounds_in(tile, ref.crs)
    hit = np.flatnonzero(
        (ref.bounds[:, 0] <= r)
        & (ref.bounds[:, 2] >= left)
        & (ref.bounds[:, 1] <= t)
        & (ref.bounds[:, 3] >= b)
    )
    parts = [ref.parts[int(i)] for i in hit]
    task = dask.delayed(_burn)(parts, tile, ref.value_column, dtype)
    arr = da.from_delayed(task, tile.shape, dtype=dtype).rechunk((chunk_px, chunk_px))
    return xr.DataArray(
        arr, dims=("y", "x"), coords={"y": tile.y_coords(), "x": tile.x_coords()}, name="LULC"
    )


def reference_classes(cfg):
    """The run's class table: from the reference layer, or the synthetic source's classes."""
    from eoflow.reference.classes import ClassTable

    r = cfg.reference
    if r.kind == "synthetic":
        from eoflow.sources.synthetic import synthetic_classes

        return ClassTable.from_json(synthetic_classes())
    return ClassTable.from_vector(r.path, layer=r.layer, id_column=r.value_column,
                                  name_column=r.name_column, color_column=r.color_column,
                                  allow_unnamed=True)  # fmt: skip


def reference_labels(cfg, ref: ReferenceLayer | None, tile: Tile) -> xr.DataArray:
    """Lazy ``(y, x)`` uint16 reference labels of ``tile`` for the run ``cfg``."""
    if cfg.reference.kind == "synthetic":
        from eoflow.sources.synthetic import synthetic_reference

        seed = getattr(cfg.source, "seed", 0)
        c = cfg.grid.chunk_px
        return (
            synthetic_reference(tile, seed, chunks={"y": c, "x": c}).astype("uint16").rename("LULC")
        )
    return rasterize_tile(ref, tile, chunk_px=cfg.grid.chunk_px)
