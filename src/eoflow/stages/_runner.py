"""Run one stage's per-tile Dask work through a sliding window, isolating failures, writing ledgers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eoflow.cube.store import checksum_after, is_done, write_ledger
from eoflow.geo.tiles import Tile
from eoflow.stages.context import RunContext

__all__ = ["run_tiles", "run_window"]


def run_window(
    items: Sequence[Any],
    submit: Callable[[Any], list],
    finish: Callable[[Any, list], None],
    *,
    window: int,
    prepare: Callable[[Any], None] | None = None,
    on_error: Callable[[Any, Exception], None] | None = None,
) -> None:
    """Keep ``window`` items computing on the cluster; hand each one's futures to ``finish`` in order.

    ``submit(item)`` builds an item's graphs and submits them (returns their futures); it runs
    whenever fewer than ``window`` items are computing, so the workers always have queued work
    and never wait for a whole batch to end (or, at the start, for a whole batch to be built).
    ``prepare(item)`` submits an item's small pre-pass (e.g. the frame filter, at high priority)
    ``window`` items ahead of its ``submit``, so its result is there when the graph is built.
    ``finish(item, futures)`` runs in item order once all of an item's futures are done (it reads
    their results; an item that completes early waits for those before it, at most ``2 x window``
    items are submitted and not finished). A ``submit`` or ``prepare`` that raises is handed to
    ``on_error`` (re-raised without one) and the item is skipped.

    Memory stays bounded by the window whatever the number of items: the scheduler runs the
    submitted graphs in submission order and queues their root tasks (``worker-saturation``).
    """
    from distributed import as_completed

    n = len(items)
    futures: dict[int, list] = {}  # submitted, not finished
    remaining: dict[int, int] = {}  # futures of an item not yet complete
    owner: dict = {}  # future key -> item index
    failed: set[int] = set()
    ac = as_completed()
    prepared = submitted = head = computing = 0

    def fail(i: int, exc: Exception) -> None:
        if on_error is None:
            raise exc
        failed.add(i)
        on_error(items[i], exc)

    def prepare_until(stop: int) -> None:
        nonlocal prepared
        while prepared < min(stop, n):
            if prepare is not None and prepared not in failed:
                try:
                    prepare(items[prepared])
                except Exception as exc:
                    fail(prepared, exc)
            prepared += 1

    while head < n:
        while submitted < n and computing < window and submitted - head < 2 * window:
            prepare_until(submitted + window + 1)
            i, submitted = submitted, submitted + 1
            if i in failed:
                continue
            try:
                futs = list(submit(items[i]))
            except Exception as exc:
                fail(i, exc)
                continue
            futures[i], remaining[i] = futs, len(futs)
            for f in futs:
                owner[f.key] = i
                ac.add(f)
            computing += 1 if futs else 0
        while head < submitted and (head in failed or remaining.get(head) == 0):
            if head not in failed:
                finish(items[head], futures.pop(head))
                del remaining[head]
            head += 1
        if head >= n or (head < submitted and remaining.get(head, 0) == 0):
            continue
        f = next(ac)  # one completion
        i = owner.pop(f.key)
        remaining[i] -= 1
        if remaining[i] == 0:
            computing -= 1


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
    model). Tiles go through :func:`run_window` with ``cluster.batch_tiles`` tiles (default one
    per worker thread) computing at once: each tile's graph is built in the client and submitted
    as soon as a slot is free, while the others compute. ``prepare([tile])`` runs a window ahead
    of the tile's
    ``build``, so that a pre-pass it submits (e.g. the frame filter, at high priority) is done when
    the graph is built. A failing tile is marked failed, its partial group removed, and the others
    go on.

    Returns
    -------
    list of Tile
        The tiles that are complete in ``store`` after this call.
    """
    import dask

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

    def submit(tile: Tile) -> list:
        if ctx.status.get(tile.tile_id, {}).get("state") == "failed":  # its pre-pass failed
            bar.update()
            return []
        # the ledger's checksum is read by a worker right after the tile's write
        graph = dask.delayed(checksum_after, pure=False)(build(tile), str(store), tile.tile_id)
        return [ctx.client.compute(graph)]

    def finish(tile: Tile, futures: list) -> None:
        if not futures:
            return
        try:
            checksum = futures[0].result()
            extra = ledger_extra(tile) if ledger_extra else {}
            write_ledger(store, tile.tile_id, config_hash=key, checksum=checksum,
                         extra={"stage": stage, **extra})  # fmt: skip
            ctx.mark_ok(tile, stage)
            done.append(tile)
        except Exception as exc:
            shutil.rmtree(Path(store) / tile.tile_id, ignore_errors=True)
            ctx.mark_failed(tile, stage, exc)
        bar.update()

    def on_error(tile: Tile, exc: Exception) -> None:
        ctx.mark_failed(tile, stage, exc)
        bar.update()

    run_window(todo, submit, finish, window=ctx.window(),
               prepare=None if prepare is None else (lambda tile: prepare([tile])),
               on_error=on_error)  # fmt: skip
    bar.close()
    for tile in tiles:  # late writes of failed tiles' tasks: never leave their chunks behind
        if ctx.status.get(tile.tile_id, {}).get("state") == "failed" and tile not in done:
            shutil.rmtree(Path(store) / tile.tile_id, ignore_errors=True)
    return [t for t in tiles if t in done]
