"""Stage ``ingest``: source -> lazy cube per tile -> ``cube.zarr``."""

from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from eoflow.config import GeoTiffSource, GpkgRasterSource, RunConfig, StacSource, SyntheticSource
from eoflow.cube.store import write_tile
from eoflow.errors import InputError
from eoflow.geo.tiles import Tile
from eoflow.stages._runner import run_tiles
from eoflow.stages.context import RunContext

__all__ = ["open_source", "run_ingest"]


def _bbox_ll(tiles: list[Tile]) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    tr = Transformer.from_crs(tiles[0].crs, "EPSG:4326", always_xy=True)
    boxes = [tr.transform_bounds(*t.bounds) for t in tiles]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))  # fmt: skip


def open_source(cfg: RunConfig, tiles: list[Tile]) -> tuple[Callable[[Tile], xr.Dataset], dict]:
    """A function building each tile's lazy cube from the configured source, plus source info."""
    src, chunk = cfg.source, cfg.grid.chunk_px
    if isinstance(src, StacSource):
        from eoflow.cube.build import build_stac_cube
        from eoflow.sources.stac import preflight_assets, search_items

        items = search_items(
            src.catalog, start=cfg.start, end=cfg.end, bbox_ll=_bbox_ll(tiles),
            collections=src.collections, max_cloud_cover=src.max_cloud_cover,
        )  # fmt: skip
        if not items.items:
            raise InputError(
                f"no Item of {src.catalog} falls in {cfg.start}..{cfg.end} over the AOI",
                "check the dates, the AOI and source.collections",
            )
        _check_footprints(items, tiles, src.catalog)
        preflight_assets(items, src.assets)
        info = {"kind": "stac", "catalog": src.catalog, "items": [i["id"] for i in items.items]}
        info["asset_info"] = items.asset_info()
        info["href_index"] = {
            a["href"]: (i["id"], k) for i in items.items for k, a in i["assets"].items()
        }

        def build(tile: Tile) -> xr.Dataset:
            return build_stac_cube(
                items, tile, assets=src.assets, static_assets=src.static_assets, chunk_px=chunk
            )

        return build, info
    if isinstance(src, GeoTiffSource):
        from eoflow.sources.geotiff import load_geotiff_cube

        def build(tile: Tile) -> xr.Dataset:
            ds = load_geotiff_cube(
                src.paths, tile=tile, date_pattern=src.date_pattern, band_names=src.band_names,
                chunks={"time": -1, "y": chunk, "x": chunk},
            )  # fmt: skip
            return _one_time_chunk(_in_range(ds, cfg), chunk)

        return build, {"kind": "geotiff", "paths": src.paths}
    if isinstance(src, GpkgRasterSource):
        from eoflow.gpkg.raster import load_gpkg_raster_cube

        def build(tile: Tile) -> xr.Dataset:
            ds = load_gpkg_raster_cube(
                src.path, tile=tile, match=src.match, chunks={"time": -1, "y": chunk, "x": chunk}
            )
            return _one_time_chunk(_in_range(ds, cfg), chunk)

        return build, {"kind": "gpkg", "path": src.path}
    if isinstance(src, SyntheticSource):
        from eoflow.sources.synthetic import synthetic_cube

        def build(tile: Tile) -> xr.Dataset:
            return synthetic_cube(
                tile, start=cfg.start, end=cfg.end, revisit_days=src.revisit_days,
                chunks={"time": -1, "y": chunk, "x": chunk}, seed=src.seed,
            )  # fmt: skip

        return build, {"kind": "synthetic", "seed": src.seed, "note": "SYNTHETIC data"}
    raise AssertionError(f"unknown source {src!r}")  # pragma: no cover - pydantic guards this


def _check_footprints(items, tiles: list[Tile], catalog: str) -> None:
    """Refuse an AOI that no Item footprint touches (before any graph is built)."""
    import shapely
    from shapely.geometry import shape

    bbox = shapely.box(*_bbox_ll(tiles))
    if not any(shape(i["geometry"]).intersects(bbox) for i in items.items if i.get("geometry")):
        raise InputError(
            f"the AOI (lon/lat {tuple(round(v, 4) for v in bbox.bounds)}) lies outside every Item of {catalog}",
            "check the AOI's CRS and extent against the data",
        )


def _one_time_chunk(ds: xr.Dataset, chunk: int) -> xr.Dataset:
    """A chunk holds the full time series of a spatial block."""
    return ds.chunk({d: (-1 if d == "time" else chunk) for d in ds.dims if d in ("time", "y", "x")})


def _in_range(ds: xr.Dataset, cfg: RunConfig) -> xr.Dataset:
    import numpy as np

    t = ds["time"].values
    keep = (t >= np.datetime64(cfg.start)) & (t < np.datetime64(cfg.end) + np.timedelta64(1, "D"))
    return ds.isel(time=np.flatnonzero(keep))


def run_ingest(ctx: RunContext) -> list[Tile]:
    """Write every tile's cube to ``cube.zarr`` (skipping finished tiles)."""
    if ctx.source is None:
        ctx.source = open_source(ctx.cfg, ctx.ok_tiles())
    build, info = ctx.source
    ctx.href_index = info.get("href_index", {})
    ctx.source_info = {k: v for k, v in info.items() if k not in ("href_index", "asset_info")}
    store = ctx.path("cube.zarr")

    def writer(tile: Tile):
        return write_tile(build(tile), store, tile.tile_id, compute=False)

    return run_tiles(ctx, "ingest", store, writer)
