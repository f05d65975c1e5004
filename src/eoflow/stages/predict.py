"""Stage ``predict``: wall-to-wall class and max-probability maps per tile, Zarr and one COG."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import xarray as xr

from eoflow.cube.model import attach_grid, cube_tile
from eoflow.cube.store import open_tile, read_ledger, write_tile
from eoflow.geo.tiles import Tile
from eoflow.stages._runner import run_tiles
from eoflow.stages.context import RunContext

__all__ = ["predict_block", "run_predict", "tile_prediction", "write_cog_mosaic"]


@functools.lru_cache(maxsize=4)
def _booster(model_text: str):
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)


def predict_block(
    block: np.ndarray, footprint: np.ndarray, *, model_text: str, class_ids: np.ndarray
) -> np.ndarray:
    """``(n_feat, y, x)`` features -> ``(2, y, x)`` float32: class id and max probability."""
    nf, h, w = block.shape
    X = block.reshape(nf, -1).T
    out = np.zeros((2, h * w), np.float32)
    out[1] = np.nan
    inside = footprint.ravel() != 0
    if inside.any():
        p = _booster(model_text).predict(X[inside]).reshape(int(inside.sum()), -1)
        out[0, inside] = class_ids[p.argmax(axis=1)]
        out[1, inside] = p.max(axis=1)
    return out.reshape(2, h, w)


def tile_prediction(
    feats: xr.Dataset,
    *,
    model_text: str,
    class_ids: list[int],
    time_features: list[str],
    static: list[str],
) -> xr.Dataset:
    """Lazy ``CLASS`` (uint16) and ``MAX_PROB`` (float32) maps of one tile, one task per chunk."""
    import dask.array as da

    layers = []
    for t in range(feats.sizes["time"]):
        layers.extend(feats[f].data[t] for f in time_features)
    layers.extend(feats[s].data for s in static)
    stack = da.stack(layers, axis=0).rechunk({0: -1})
    fp = feats["FOOTPRINT"].data
    out = da.map_blocks(
        predict_block, stack, fp, model_text=model_text, class_ids=np.asarray(class_ids, np.float32),
        dtype=np.float32, chunks=((2,), *stack.chunks[1:]), meta=np.empty((0, 0, 0), np.float32),
    )  # fmt: skip
    ds = xr.Dataset(
        {"CLASS": (("y", "x"), out[0].astype(np.uint16)), "MAX_PROB": (("y", "x"), out[1])},
        coords={"y": feats["y"], "x": feats["x"]},
    )
    return attach_grid(ds, cube_tile(feats))


def run_predict(ctx: RunContext) -> list[Tile]:
    """Predict every tile with features into ``prediction.zarr`` and ``prediction.tif``."""
    from eoflow.models.lgbm import load_model

    model = load_model(ctx.path("model"))
    text = model.booster.model_to_string()
    fstore, store = ctx.path("features.zarr"), ctx.path("prediction.zarr")
    tiles = [t for t in ctx.ok_tiles() if read_ledger(fstore, t.tile_id)]

    def writer(tile: Tile):
        feats = open_tile(fstore, tile.tile_id)
        pred = tile_prediction(feats, model_text=text, class_ids=model.class_ids,
                               time_features=model.sidecar["time_features"],
                               static=model.sidecar["static_features"])  # fmt: skip
        return write_tile(pred, store, tile.tile_id, compute=False)

    import hashlib

    key = ctx.chash + "-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    before = ctx.changed
    ctx.changed = False
    done = run_tiles(ctx, "predict", store, writer, tiles=tiles, key=key)
    if done and (ctx.changed or not ctx.path("prediction.tif").exists()):
        write_cog_mosaic(store, done, ctx.path("prediction.tif"), classes=model.sidecar["classes"])
        ctx.changed = True
    ctx.changed = ctx.changed or before
    return done


def write_cog_mosaic(store: Path, tiles: list[Tile], dst: Path, *, classes: list[dict]) -> None:
    """Mosaic the tiles' class maps (same grid) into one COG with the class colormap embedded."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import from_bounds

    from eoflow.reference.classes import ClassTable

    lefts, bottoms, rights, tops = zip(*(t.bounds for t in tiles))
    rx, ry = tiles[0].res
    left, top = min(lefts), max(tops)
    width = round((max(rights) - left) / rx)
    height = round((top - min(bottoms)) / ry)
    transform = rasterio.transform.Affine(rx, 0, left, 0, -ry, top)
    tmp = dst.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint16", crs=tiles[0].crs,
                   transform=transform, nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE")  # fmt: skip
    with rasterio.open(tmp, "w", **profile) as out:
        for tile in tiles:
            arr = open_tile(store, tile.tile_id)["CLASS"].values
            win = from_bounds(*tile.bounds, transform=transform).round_offsets().round_lengths()
            out.write(arr, 1, window=win)
        out.write_colormap(1, ClassTable.from_json(classes).gdal_colormap())
    rio_copy(tmp, dst, driver="COG", compress="DEFLATE")
    tmp.unlink()
