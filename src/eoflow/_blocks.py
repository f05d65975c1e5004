"""Hand a consumer the block a chunk was sliced from, instead of the slicing task's copy.

The fused kernel returns all of a chunk's features as one ``(planes, y, x)`` block and each
feature is a slice of it. Dask makes every slice a task, and its ``getitem`` copies a slice that
is less than half its source (so a feature's 25 planes out of 227 are copied: 225 MB per
500 x 500 tile, and both copies and source alive at once). The writers and the sampler take the
source block once and slice it themselves (views, no copy), and the slicing tasks, no longer
needed by anything, are culled from the graph.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["resolve", "sources_of"]


def _slice_of(block, graphs: dict) -> tuple[Any, tuple] | None:
    """``(source Delayed, index)`` when ``block``'s task only slices another task's output.

    ``graphs`` caches each distinct graph materialised as a dict (by id).
    """
    try:
        from dask._task_spec import Alias, Task, TaskRef
        from dask.array.chunk import getitem as chunk_getitem
        from dask.delayed import Delayed

        hlg = block.__dask_graph__()
        graph = graphs.get(id(hlg))
        if graph is None:
            graph = graphs[id(hlg)] = dict(hlg)
        task = graph[block.key]
        while isinstance(task, Alias):
            task = graph[task.target]
        if not (isinstance(task, Task) and task.func in (chunk_getitem, operator.getitem)):
            return None
        src, index = task.args if len(task.args) == 2 else (None, None)
        basic = isinstance(index, tuple) and all(isinstance(i, (slice, int)) for i in index)
        if not (isinstance(src, TaskRef) and basic) or task.kwargs:
            return None
        return Delayed(src.key, graph), index
    except Exception:  # another Dask graph layout: keep the slicing task
        return None


def sources_of(blocks: list, graphs: dict | None = None) -> tuple[list, list]:
    """Unique source blocks and, per block, ``(position in the sources, index or None)``.

    ``graphs``: a cache shared by the calls for one collection's chunks (each variable's graph
    is then materialised once, not once per chunk).
    """
    sources: list = []
    where: dict = {}
    refs = []
    graphs = {} if graphs is None else graphs
    for block in blocks:
        found = _slice_of(block, graphs)
        src, index = found if found is not None else (block, None)
        if src.key not in where:
            where[src.key] = len(sources)
            sources.append(src)
        refs.append((where[src.key], index))
    return sources, refs


def resolve(refs: list, sources: tuple) -> list:
    """The blocks of :func:`sources_of`'s ``refs`` (views of the computed sources)."""
    return [sources[j] if index is None else sources[j][index] for j, index in refs]
