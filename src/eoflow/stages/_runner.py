"""Run one stage's per-tile Dask work in batches, isolating failures and writing ledgers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from eoflow.cube.store import checksum_after, is_done, write_ledger
from eoflow.geo.tiles import Tile
from eoflow.stages.context import RunContext

__all__ = ["run_tiles"]


def run_tiles(
    ctx: RunContext,
    stage: str,
    store: Path,
    build: Callable[[Tile], object],
    *,
    tiles: list[Tile] | None = None,
    ledger_extra: Callable[[Tile], dict] | None = None,
    prepare: Callable[[list[Tile]], None] | None = None,
    key: str | None = None,
) -> list[Tile]:
    """Compute ``build(tile)`` (a Dask collection that writes the tile) for every tile not done.

    A tile whose ledger entry matches the config hash is skipped (``--resume`` and re-runs write
    nothing); ``key`` replaces the config hash when outputs also depend on another input (the
    model). ``prepare(batch)`` runs before a batch's graphs are built: for the first batch first,
    for each later one right after the previous batch is submitted, so that a pre-pass it submits
    (e.g. the frame filter, at high priority) runs while the previous batch computes; that
    batch's graphs are then built, still while the previous batch computes, and submitted when
    it is done. A failing tile is marked failed, its partial group removed, and the others go on.

    Returns
    -------
    list of Tile
        The tiles that are complete in ``store`` after this call.
    """
    import dask
    from distributed import as_completed

    tiles = ctx.ok_tiles() if tiles is None else tiles
    key = key or ctx.chash
    done = [t for t in tiles if is_done(store, t.tile_id, key)]
    todo = [t for t in tiles if t not in done]
    for t in done:
        ctx.mark_ok(t, stage)
    if not todo:
        ctx.log(f"{stage}: all {len(done)} tile(s) already written, nothing to do")
        return done
    ctx.changed = True
    bar = tqdm(total=len(todo), desc=f"eoflow {stage}", unit="tile", disable=ctx.quiet, leave=False)
    batches = list(ctx.batches(todo))

    def build_batch(batch: list[Tile]) -> tuple[list, list[Tile]]:
        graphs, built = [], []
        for tile in batch:
            if ctx.status.get(tile.tile_id, {}).get("state") == "failed":
                bar.update()
                continue
            try:
                # the ledger's checksum is read by a worker right after the tile's write
                graphs.append(dask.delayed(checksum_after, pure=False)(build(tile), str(store),
                                                                       tile.tile_id))  # fmt: skip
                built.append(tile)
            except Exception as exc:
                ctx.mark_failed(tile, stage, exc)
                bar.update()
        return graphs, built

    def launch(i: int, graphs: list, built: list[Tile]) -> dict:
        # One submission per batch (one future per tile): the scheduler orders and queues the
        # batch's chunks as one graph, so a worker finishes writing a block before it generates
        # or reads many more (memory stays flat as batches grow), and a tile still fails alone.
        futures = dict(zip(ctx.client.compute(graphs), built, strict=True)) if graphs else {}
        if prepare is not None and i + 1 < len(batches):
            prepare(batches[i + 1])  # the next batch's small pre-pass overlaps this batch
        return futures

    if prepare is not None:
        prepare(batches[0])
    futures = launch(0, *build_batch(batches[0]))
    for i in range(len(batches)):
        # The next batch's graphs are built in the client while this batch computes (building
        # takes ~0.3 s per tile; done between batches it left the workers idle) and submitted as
        # soon as this batch is done: one batch in flight, so memory stays bounded.
        ahead = build_batch(batches[i + 1]) if i + 1 < len(batches) else None
        for fut in as_completed(list(futures)):
            tile = futures[fut]
            try:
                checksum = fut.result()
                extra = ledger_extra(tile) if ledger_extra else {}
                write_ledger(store, tile.tile_id, config_hash=key, checksum=checksum,
                             extra={"stage": stage, **extra})  # fmt: skip
                ctx.mark_ok(tile, stage)
                done.append(tile)
            except Exception as exc:
                shutil.rmtree(Path(store) / tile.tile_id, ignore_errors=True)
                ctx.mark_failed(tile, stage, exc)
            bar.update()
        if ahead is not None:
            futures = launch(i + 1, *ahead)
    bar.close()
    for tile in tiles:  # late writes of failed tiles' tasks: never leave their chunks behind
        if ctx.status.get(tile.tile_id, {}).get("state") == "failed" and tile not in done:
            shutil.rmtree(Path(store) / tile.tile_id, ignore_errors=True)
    return [t for t in tiles if t in done]
