"""``run_window``: items go through a real dask.distributed cluster in a sliding window."""

from __future__ import annotations

import os
import sys
import time

import pytest
from distributed import Client, LocalCluster

from eoflow import cluster
from eoflow.config import ClusterConfig
from eoflow.stages._runner import run_window


def _slow(i: int, delay: float) -> int:
    time.sleep(delay)
    return i * 10


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc, Client(lc) as c:  # fmt: skip
        yield c


def test_items_finish_in_order_with_a_bounded_window(client):
    """Later items that complete first still reach ``finish`` in order; at most ``window`` items
    compute at once, and each item's pre-pass runs before its graph is built."""
    items = list(range(12))
    delays = [0.15 if i % 3 == 0 else 0.01 for i in items]  # some items finish out of order
    prepared, submitted, finished = [], [], []
    live = {"n": 0, "max": 0}

    def prepare(i):
        prepared.append(i)

    def build(i):
        assert i in prepared
        return ("built", i)

    def launch(i, built):
        assert built == ("built", i)
        live["n"] += 1
        live["max"] = max(live["max"], live["n"])
        submitted.append(i)
        return [client.submit(_slow, i, delays[i], pure=False)]

    def finish(i, futures):
        live["n"] -= 1
        finished.append((i, futures[0].result()))

    run_window(items, build, launch, finish, window=3, prepare=prepare)
    assert finished == [(i, i * 10) for i in items]
    assert submitted == items and prepared == items
    assert live["max"] <= 2 * 3  # submitted and not finished: at most twice the window


def test_a_failing_item_is_reported_and_the_others_go_on(client):
    errors, finished = [], []

    def build(i):
        if i == 2:
            raise ValueError("bad tile")
        return i

    def launch(i, built):
        if i == 3:
            raise ValueError("bad launch")
        return [client.submit(_slow, i, 0.0, pure=False)] if i != 4 else []

    run_window(list(range(6)), build, launch, lambda i, f: finished.append(i), window=2,
               on_error=lambda i, exc: errors.append((i, str(exc))))  # fmt: skip
    assert errors == [(2, "bad tile"), (3, "bad launch")]
    assert finished == [0, 1, 4, 5]  # an item without futures finishes at once
    with pytest.raises(ValueError, match="bad tile"):
        run_window([2], build, launch, lambda i, f: None, window=2)  # without on_error: raised


def _warm() -> bool:
    return "eoflow.ops._kernels" in sys.modules and "numba" in sys.modules


def test_local_workers_start_in_the_background_and_warm_up():
    """connect() returns before the workers are up; work waits for them; they preload
    eoflow.worker (imports and numba's set-up) while starting."""
    cfg = ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    t0 = time.perf_counter()
    with cluster.connect(cfg, quiet=True) as c:
        returned = time.perf_counter() - t0
        assert c.submit(_slow, 4, 0.0, pure=False).result(timeout=120) == 40
        c.wait_for_workers(2, timeout=120)
        assert list(c.run(_warm).values()) == [True, True]
    assert returned < 30


def _parent_and_warm() -> tuple[int, bool]:
    return os.getppid(), "eoflow.stages.sample" in sys.modules and "numba" in sys.modules


def test_local_workers_are_forks_of_one_warm_server_unless_their_environment_differs():
    """Default-allocator workers fork from one fork server that imported the task modules
    (eoflow._warm); a cluster with another allocator spawns its workers from this process."""
    cfg = ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    seen = []
    for _ in range(2):
        with cluster.connect(cfg, quiet=True, wait=True) as c:
            seen += list(c.run(_parent_and_warm).values())
    parents = {p for p, _ in seen}
    assert len(parents) == 1 and os.getpid() not in parents  # one server, not this process
    assert all(warm for _, warm in seen)
    other = cfg.model_copy(update={"allocator": "system"})
    with cluster.connect(other, quiet=True, wait=True) as c:
        assert {p for p, _ in c.run(_parent_and_warm).values()} == {os.getpid()}
