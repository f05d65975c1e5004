"""Stage ``sample``: stratified fraction sampling of eroded reference pixels -> ``samples.zarr``.

One task per tile samples its labels and gathers the feature series at the chosen pixels; the
client appends each tile's rows to the store (see ``docs/formats.md``).
"""

from __future__ import annotations

import json
import shutil
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
import xarray as xr

from eoflow.cube.store import is_done, read_ledger, write_ledger
from eoflow.errors import DataError
from eoflow.geo.tiles import Tile
from eoflow.sampling import sample_pixels
from eoflow.stages.context import RunContext

if TYPE_CHECKING:
    from dask.delayed import Delayed

__all__ = [
    "SAMPLE_ARRAYS",
    "SampleWriter",
    "open_samples",
    "run_sample",
    "sample_dataset",
    "sample_tile",
]

SAMPLE_ARRAYS = ("X", "S", "y", "tile", "row", "col", "xcoord", "ycoord")
_CHUNK_ROWS = 65_536


def _gather_block(block: np.ndarray, pick: tuple, y0: int, x0: int) -> tuple:
    """Values of the sampled pixels that fall in one ``(..., y, x)`` block, and their positions."""
    rows, cols = pick
    h, w = block.shape[-2:]
    inside = np.flatnonzero((rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w))
    return inside, block[..., rows[inside] - y0, cols[inside] - x0]


def _gather(arr, pick):
    """Delayed ``arr[..., rows, cols]`` of a 2-D or 3-D Dask array, one task per block."""
    import dask

    offsets = [np.r_[0, np.cumsum(c)[:-1]] for c in arr.chunks[-2:]]
    parts = [
        dask.delayed(_gather_block, pure=True)(blk, pick, int(offsets[0][iy]), int(offsets[1][ix]))
        for (*_, iy, ix), blk in np.ndenumerate(arr.to_delayed(optimize_graph=False))
    ]
    return dask.delayed(_assemble, pure=True)(parts, pick, arr.shape[:-2], arr.dtype)


def _assemble(parts: list, pick: tuple, lead: tuple, dtype) -> np.ndarray:
    out = np.empty((*lead, pick[0].size), dtype=dtype)
    for inside, values in parts:
        out[..., inside] = values
    return out


def _finish(pick, labels, feats: list, static: list, xs, ys) -> dict[str, np.ndarray]:
    rows, cols = pick
    n = rows.size
    X = np.stack([f.T for f in feats], axis=-1) if feats else np.zeros((n, 0, 0), np.float32)
    S = np.stack(static, axis=-1) if static else np.zeros((n, 0), np.float32)
    return {
        "X": X.astype(np.float32, copy=False), "S": S.astype(np.float32, copy=False),
        "y": labels.astype(np.int32), "row": rows, "col": cols,
        "xcoord": np.asarray(xs)[cols], "ycoord": np.asarray(ys)[rows],
    }  # fmt: skip


def sample_dataset(
    ds: xr.Dataset, tile_id: str, *, fraction: float, exclude: list[int], seed: int
) -> Delayed:
    """Lazy stratified sample of one tile's features (a ``dask.delayed`` dict of arrays).

    ``ds`` is a tile's features dataset, lazy (straight from ``tile_features``, so the samples are
    gathered from the chunks in memory, in the same graph as their write) or opened from
    ``features.zarr``. Every block of every feature is visited by one small task that keeps only
    the sampled pixels; the selection is :func:`eoflow.sampling.sample_pixels` on
    ``LULC_ERODED``, so it is the same whatever the chunking.

    Returns
    -------
    dask.delayed.Delayed
        Computes to ``{"X": (n, time, feature) float32, "S": (n, static) float32, "y": int32,
        "row", "col": int32, "xcoord", "ycoord"}``, rows sorted by (row, col).
    """
    import dask

    def lazy(name):
        var = ds[name].data
        return var if isinstance(var, da.Array) else da.from_array(var, chunks=-1)

    feats, static = list(ds.attrs["features"]), list(ds.attrs.get("static_features", []))
    labels = lazy("LULC_ERODED")
    pick = dask.delayed(sample_pixels, pure=True)(
        labels, fraction=fraction, exclude=list(exclude), seed=seed, tile_id=tile_id
    )
    return dask.delayed(_finish, pure=True)(
        pick, _gather(labels, pick), [_gather(lazy(f), pick) for f in feats],
        [_gather(lazy(f).astype(np.float32), pick) for f in static],
        ds["x"].values, ds["y"].values,
    )  # fmt: skip


def sample_tile(
    store: str, tile_id: str, *, fraction: float, exclude: list[int], seed: int
) -> dict[str, np.ndarray]:
    """Sample one tile of ``features.zarr`` (runs on a worker; reads only what it needs)."""
    ds = xr.open_zarr(store, group=tile_id, consolidated=False)
    lazy = sample_dataset(ds, tile_id, fraction=fraction, exclude=exclude, seed=seed)
    return lazy.compute(scheduler="sync")


class SampleWriter:
    """Append tiles' samples to a ``samples.zarr`` store (``docs/formats.md``) as they arrive.

    Rows are buffered and written as whole chunks of ``chunk_rows`` (never a read-modify-write of a
    partial chunk), so memory holds at most one chunk plus one tile's part, however many tiles
    come. Call :meth:`close` to write the last, partial chunk.
    """

    def __init__(self, path: Path, attrs: dict, *, chunk_rows: int = _CHUNK_ROWS):
        import zarr

        shutil.rmtree(path, ignore_errors=True)
        self.root = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.root.attrs.update(attrs)
        self.chunk_rows = chunk_rows
        self.n = 0  # rows appended
        self._written = 0  # rows on disk
        self._created = False
        self._buf: dict[str, list[np.ndarray]] = {name: [] for name in SAMPLE_ARRAYS}

    def append(self, part: dict, tile_index: int) -> None:
        """Append one tile's rows (a dict of :data:`SAMPLE_ARRAYS` but ``tile``)."""
        k = int(part["y"].shape[0])
        part = {**part, "tile": np.full(k, tile_index, np.int32)}
        if not self._created:
            self._created = True
            for name in SAMPLE_ARRAYS:
                arr = np.asarray(part[name])
                self.root.create_array(name, shape=(0, *arr.shape[1:]), dtype=arr.dtype,
                                       chunks=(self.chunk_rows, *arr.shape[1:]))  # fmt: skip
        for name in SAMPLE_ARRAYS:
            self._buf[name].append(np.asarray(part[name]))
        self.n += k
        if self.n - self._written >= self.chunk_rows:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        pending = self.n - self._written
        rows = pending if final else pending - pending % self.chunk_rows
        if rows == 0:
            return
        for name in SAMPLE_ARRAYS:
            data = np.concatenate(self._buf[name])
            z = self.root[name]
            z.resize((self._written + rows, *z.shape[1:]))
            z[self._written : self._written + rows] = data[:rows]
            self._buf[name] = [data[rows:]]
        self._written += rows

    def close(self) -> int:
        """Write what is buffered; returns the number of rows."""
        self._flush(final=True)
        return self.n


def open_samples(path: str | Path) -> dict:
    """Read a samples store into memory (samples are bounded by the sampling fraction)."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").exists():
        raise DataError(f"samples store {path} does not exist", "run the 'sample' stage first")
    root = zarr.open_group(str(path), mode="r")
    out = {name: root[name][:] for name in SAMPLE_ARRAYS}
    out["attrs"] = dict(root.attrs)
    return out


def run_sample(ctx: RunContext) -> Path:
    """Sample every tile of ``features.zarr`` into ``samples.zarr`` (one ledger entry)."""
    from eoflow.reference.rasterize import reference_classes

    store, path = ctx.path("features.zarr"), ctx.path("samples.zarr")
    if is_done(path, "all", ctx.chash) and path.exists() and not ctx.changed:
        ctx.log("sample: samples.zarr already written, nothing to do")
        return path
    tiles = [t for t in ctx.ok_tiles() if read_ledger(store, t.tile_id)]
    if not tiles:
        raise DataError(f"no tile of {store} has features to sample",
                        "run the 'features' stage first; tiles.json lists failed tiles")  # fmt: skip
    s = ctx.cfg.sampling

    def submit(tile: Tile):
        return ctx.client.submit(sample_tile, str(store), tile.tile_id, fraction=s.fraction,
                                 exclude=list(s.exclude), seed=s.seed, pure=False)  # fmt: skip

    ctx.changed = True
    shutil.rmtree(path, ignore_errors=True)
    first = xr.open_zarr(store, group=tiles[0].tile_id, consolidated=False)
    attrs0 = first.attrs
    classes = reference_classes(ctx.cfg)
    attrs = {
        "features": list(attrs0["features"]),
        "static_features": list(attrs0.get("static_features", [])),
        "time": [str(t)[:10] for t in first["time"].values],
        "tiles": [t.tile_id for t in tiles],
        "crs": tiles[0].crs,
        "classes": classes.to_json(),
        "sampling": s.model_dump(),
    }
    writer = None
    from tqdm.auto import tqdm

    # A sliding window of ``2 x batch_tiles`` tiles in flight, appended in tile order and released
    # as soon as they are written: workers never hold more than the window's samples, however
    # many tiles the area has.
    window = 2 * ctx.cfg.cluster.batch_tiles
    pending = deque(submit(t) for t in tiles[:window])
    bar = tqdm(total=len(tiles), desc="eoflow sample", unit="tile", disable=ctx.quiet, leave=False)
    for i, tile in enumerate(tiles):
        fut = pending.popleft()
        if i + window < len(tiles):
            pending.append(submit(tiles[i + window]))
        try:
            part = fut.result()
        except Exception as exc:
            ctx.mark_failed(tile, "sample", exc)
            continue
        finally:
            fut.release()
            bar.update()
        if writer is None:
            writer = SampleWriter(path, attrs)
        writer.append(part, i)
    bar.close()
    if writer is None:
        raise DataError("sampling failed on every tile", "see tiles.json")
    writer.close()
    counts = np.unique(open_samples(path)["y"], return_counts=True)
    write_ledger(path, "all", config_hash=ctx.chash,
                 extra={"per_class": {int(k): int(v) for k, v in zip(*counts)}})  # fmt: skip
    ctx.log(f"sample: {int(counts[1].sum())} pixels from {len(tiles)} tile(s): "
            + json.dumps({int(k): int(v) for k, v in zip(*counts)}))  # fmt: skip
    return path
