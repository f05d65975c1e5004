"""Local workers' memory allocator (``cluster.allocator``): glibc by default, jemalloc on request."""

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
    with cluster.connect(cfg, quiet=True) as client:
        return list(client.run(_jemalloc_mapped).values())


@needs_jemalloc
def test_jemalloc_is_loaded_in_every_worker_and_not_in_the_client():
    before = os.environ.get("LD_PRELOAD")
    assert _mapped_in_workers("jemalloc") == [True, True]
    assert os.environ.get("LD_PRELOAD") == before  # the client's environment is left as it was
    assert not _jemalloc_mapped() or "jemalloc" in (before or "")


def test_default_allocator_is_the_system_one():
    assert ClusterConfig().allocator == "system"
    assert _mapped_in_workers("system") == [False, False]


def test_jemalloc_required_but_missing_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(cluster, "find_jemalloc", lambda: None)
    cfg = ClusterConfig(n_workers=1, threads_per_worker=1, allocator="jemalloc")
    with pytest.raises(ClusterError, match="libjemalloc2"), cluster.connect(cfg, quiet=True):
        pass
