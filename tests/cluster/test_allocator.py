"""Local workers' memory allocator (``cluster.allocator``): retaining glibc by default, others on request."""

from __future__ import annotations

import os

import pytest

from eoflow import cluster
from eoflow.config import ClusterConfig
from eoflow.errors import ClusterError

needs_jemalloc = pytest.mark.skipif(
    cluster.find_jemalloc() is None, reason="libjemalloc2 not installed (make setup installs it)"
)


def _jemalloc_mapped() -> bool:
    with open("/proc/self/maps") as fh:
        return any("jemalloc" in line for line in fh)


def _mapped_in_workers(allocator: str) -> list[bool]:
    cfg = ClusterConfig(n_workers=2, threads_per_worker=1, allocator=allocator)
    with cluster.connect(cfg, quiet=True, wait=True) as client:
        return list(client.run(_jemalloc_mapped).values())


@needs_jemalloc
def test_jemalloc_is_loaded_in_every_worker_and_not_in_the_client():
    before = os.environ.get("LD_PRELOAD")
    assert _mapped_in_workers("jemalloc") == [True, True]
    assert os.environ.get("LD_PRELOAD") == before  # the client's environment is left as it was
    assert not _jemalloc_mapped() or "jemalloc" in (before or "")


def _kept_after_free() -> int:
    """Resident bytes still held after a 64 MiB buffer was filled and freed."""
    import numpy as np

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    buf = np.empty(64 << 20, np.uint8)
    buf.fill(1)
    del buf
    return rss() - before


def _worker_kept(allocator: str) -> list[int]:
    cfg = ClusterConfig(n_workers=1, threads_per_worker=1, allocator=allocator)
    with cluster.connect(cfg, quiet=True, wait=True) as client:
        return list(client.run(_kept_after_free).values())


def test_default_allocator_retains_freed_chunks_and_system_returns_them():
    assert ClusterConfig().allocator == "retain"
    before = {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_")}
    (retained,) = _worker_kept("retain")
    (returned,) = _worker_kept("system")
    # retained: the freed pages stay in the heap for the next chunk (no fresh page faults);
    # glibc as Dask configures it unmaps a buffer this size at once
    assert retained > 60 << 20
    assert returned < 8 << 20
    assert {k: os.environ.get(k) for k in before} == before  # the client's environment is kept
    assert _mapped_in_workers("retain") == [False, False]


def test_jemalloc_required_but_missing_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(cluster, "find_jemalloc", lambda: None)
    cfg = ClusterConfig(n_workers=1, threads_per_worker=1, allocator="jemalloc")
    with pytest.raises(ClusterError, match="libjemalloc2"), cluster.connect(cfg, quiet=True):
        pass
