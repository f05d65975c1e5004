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
    build: Callable[[Any], Any],
    launch: Callable[[Any, Any], list],
    finish: Callable[[Any, list], None],
    *,
    window: int,
    prepare: Callable[[Any], None] | None = None,
    on_error: Callable[[Any, Exception], None] | None = None,
) -> None:
    """Keep ``window`` items computing on the cluster; hand each one's futures to ``finish`` in order.

    ``build(item)`` makes an item's graphs in the client; it runs one item ahead, while the
    cluster computes, so that when an item completes the next one is submitted at once by
    ``launch(item, built)`` (returns its futures): the workers never wait for a whole batch to
    end, for a whole first batch to be built, or for the client to build the next graph.
    ``prepare(item)`` submits an item's small pre-pass (e.g. the frame filter, at high priority)
    ``window`` items ahead, so its result is there when the graph is built. ``finish(item,
    futures)`` runs in item order once all of an item's futures are done (it reads their
    results; an item that completes early waits for those before it, at most ``2 x window``
    items are submitted and not finished). A ``build``, ``launch`` or ``prepare`` that raises is
    handed to ``on_error`` (re-raised without one) and the item is skipped.

    Memory stays bounded by the window whatever the number of items: the scheduler runs the
    submitted graphs in submission order.
    """
    from distributed import as_completed

    n = len(items)
    futures: dict[int, list] = {}  # submitted, not finished
    remaining: dict[int, int] = {}  # futures of an item not yet complete
    owner: dict = {}  # future key -> item index
    built: dict[int, Any] = {}  # built, not submitted
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

    def build_ahead(i: int) -> None:
        prepare_until(i + window + 1)
        if i < n and i not in built and i not in failed:
            try:
                built[i] = build(items[i])
            except Exception as exc:
                fail(i, exc)

    while head < n:
        while submitted < n and computing < window and submitted - head < 2 * window:
            i, submitted = submitted, submitted + 1
            build_ahead(i)
            if i in failed:
                continue
            try:
                futs = list(launch(items[i], built.pop(i)))
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
        if head >= n or head == submitted or remaining.get(head, 0) == 0:
            continue  # nothing in flight, or the head can be finished: back to the top
        if submitted < n:
            build_ahead(submitted)  # the next item's graph, while the cluster computes
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
    per worker thread) computing at once: the next tile's graph is built in the client while the
    others compute and submitted as soon as a slot is free. ``prepare([tile])`` runs a window ahead
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

    def build_tile(tile: Tile):
        if ctx.status.get(tile.tile_id, {}).get("state") == "failed":  # its pre-pass failed
            return None
        # the ledger's checksum is read by a worker right after the tile's write
        return dask.delayed(checksum_after, pure=False)(build(tile), str(store), tile.tile_id)

    def launch(tile: Tile, graph) -> list:
        if graph is None:
            bar.update()
            return []
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

    run_window(todo, build_tile, launch, finish, window=ctx.window(),
               prepare=None if prepare is None else (lambda tile: prepare([tile])),
               on_error=on_error)  # fmt: skip
    bar.close()
    for tile in tiles:  # late writes of failed tiles' tasks: never leave their chunks behind
        if ctx.status.get(tile.tile_id, {}).get("state") == "failed" and tile not in done:
            shutil.rmtree(Path(store) / tile.tile_id, ignore_errors=True)
    return [t for t in tiles if t in done]
