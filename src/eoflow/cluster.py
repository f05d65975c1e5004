"""Connect to Dask: a LocalCluster sized to the machine (default) or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from eoflow.config import ClusterConfig
from eoflow.errors import ClusterError

__all__ = ["connect", "dashboard_link", "find_jemalloc", "total_threads"]

_JEMALLOC_CONF = "dirty_decay_ms:1000,muzzy_decay_ms:0"
"""Freed pages go back to the OS after about a second (memory stays bounded between tiles)."""
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib")  # fmt: skip


def _local_sizes(cfg: ClusterConfig) -> tuple[int, int]:
    cores = os.cpu_count() or 1
    n = cfg.n_workers or max(1, min(cores, 4) if cores < 8 else cores // 2)
    threads = cfg.threads_per_worker or max(1, cores // n)
    return n, threads


def find_jemalloc() -> str | None:
    """Path of the jemalloc shared library (``libjemalloc.so.2``), or None when not installed."""
    from pathlib import Path

    for d in (os.path.join(sys.prefix, "lib"), *_LIB_DIRS):
        path = Path(d) / "libjemalloc.so.2"
        if path.is_file():
            return str(path)
    return None


def _worker_env(cfg: ClusterConfig) -> dict[str, str]:
    """Environment for local worker processes, set before they start (the allocator)."""
    if not cfg.processes or cfg.allocator == "system":
        return {}
    if cfg.allocator == "retain":
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 and glibc maps every buffer above 32 MB
        # afresh, so each 68 MB chunk costs ~17,000 page faults and an munmap (measured on a
        # 2-core VM: 1 s of system time per 500 x 500 x 68 patch read). One arena, no mmap and
        # no trimming keep freed chunk buffers in the heap for the next task: the worker's
        # resident memory stays at its high-water mark instead of shrinking between tasks.
        return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                "MALLOC_TRIM_THRESHOLD_": str(1 << 62), "MALLOC_TOP_PAD_": str(64 << 20)}  # fmt: skip
    path = find_jemalloc()
    if path is None or sys.platform != "linux":
        raise ClusterError(
            "cluster.allocator is 'jemalloc' but libjemalloc.so.2 is not installed",
            "install it (apt-get install libjemalloc2) or set cluster.allocator: system",
        )
    # glibc gives every buffer above 32 MB fresh pages from the OS (a page fault per 4 KiB);
    # jemalloc keeps freed buffers for reuse and returns idle memory within about a second.
    conf = os.environ.get("MALLOC_CONF") or _JEMALLOC_CONF  # a user's own setting wins
    return {"LD_PRELOAD": path, "MALLOC_CONF": conf}


@contextlib.contextmanager
def connect(
    cfg: ClusterConfig, *, address: str | None = None, quiet: bool = False, wait: bool = False
) -> Iterator:
    """Yield a ``distributed.Client``; close what we started on exit.

    A local cluster's workers start in the background (see :func:`_start_local`): submitted
    work waits for them, but ``client.run`` or ``scheduler_info()`` right away may see fewer.

    Parameters
    ----------
    cfg
        The run's cluster section.
    address
        Overrides ``cfg.address`` (the CLI's ``--scheduler``).
    wait
        Wait until every local worker has started before yielding.
    """
    from distributed import Client

    address = address or cfg.address
    cluster = client = None
    with contextlib.ExitStack() as stack:
        try:
            if address:
                try:
                    client = Client(address, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise ClusterError(
                        f"cannot reach the Dask scheduler at {address}: {exc}",
                        "check the address and that the scheduler is running",
                    ) from exc
            else:
                cluster = _start_local(cfg, stack)
                # by address: a Client given the cluster object would wait for its workers
                client = Client(cluster.scheduler_address)
                n, threads = _local_sizes(cfg)
                client.eoflow_local_threads = n * threads  # planned: the workers are starting
                if wait:
                    client.wait_for_workers(len(cluster.worker_spec), timeout=120)
            if not quiet:
                print(f"eoflow: Dask dashboard: {dashboard_link(client)}", file=sys.stderr)
            yield client
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()


def _start_local(cfg: ClusterConfig, stack: contextlib.ExitStack):
    """A LocalCluster whose workers boot (and warm up: :mod:`eoflow.worker`) in the background.

    It starts with no worker and is scaled at once, so the client goes on (opens tiles, builds
    graphs) while the worker processes start; tasks wait for them. The workers' allocator
    settings must be in the environment when each process is spawned, which now happens later,
    on the cluster's event loop: they stay in the Dask config and in this process's environment
    (the nanny sets them here) until ``stack`` closes, then the environment is restored.
    """
    import dask
    from distributed import LocalCluster

    n, threads = _local_sizes(cfg)
    net = {"host": "127.0.0.1", "protocol": "tcp://"}  # loopback only, threads or processes
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                 **_worker_env(cfg)}  # fmt: skip
    # the nanny sets these here when it starts a worker: put back after the cluster is closed
    stack.enter_context(_restored_environ(spawn_env))  # (entered first, so exited last)
    stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}))
    if cfg.processes:
        method = _start_method(spawn_env, fork=cfg.allocator == "retain")
        stack.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": method}))
    cluster = LocalCluster(
        n_workers=0, threads_per_worker=threads, processes=cfg.processes,
        dashboard_address=cfg.dashboard_address, memory_limit=cfg.memory_limit,
        silence_logs=logging.CRITICAL, **({"preload": ["eoflow.worker"]} if cfg.processes else {}),
        **net,
    )  # fmt: skip
    cluster.scale(n)
    return cluster


_FORKSERVER_ENV: dict[str, str] | None = None
"""The worker environment the fork server was started with (None: not started)."""


def _start_method(env: dict[str, str], *, fork: bool = True) -> str:
    """How local worker processes start: forked from a warm fork server where Python has one.

    The first local cluster of a client process with the default allocator (``fork``) starts
    Python's fork server at once, with the workers' environment (the allocator's variables act
    when a process starts; a fork keeps the server's). The server preloads :mod:`eoflow._warm`
    (Dask, xarray, zarr, eoflow's task modules, numba's cached kernels) while this process starts
    the scheduler, and every worker is then a fork of it: about 0.15 CPU seconds per worker
    instead of 2 for a fresh interpreter (2-core VM), and the first tasks import nothing. Another
    allocator, a later cluster asking for another environment, a platform without fork server
    or a user's own ``distributed.worker.multiprocessing-method`` get Dask's start method.
    """
    import multiprocessing

    import dask

    global _FORKSERVER_ENV
    env = {k: str(v) for k, v in env.items()}  # Dask's defaults hold numbers
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method != "spawn" or sys.platform != "linux" or not fork:
        return method
    if _FORKSERVER_ENV is None:
        import distributed.utils

        # the nanny's own addition to the environment of the processes it starts
        server_env = {"PYTHONHASHSEED": "6640", **env}
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["eoflow._warm"])
        # Dask would otherwise set its own list once (importing every optional package here)
        distributed.utils._forkserver_preload_set = True
        from multiprocessing import forkserver

        with _restored_environ(server_env):
            os.environ.update(server_env)
            forkserver.ensure_running()  # starts warming up now, in the background
        _FORKSERVER_ENV = env
    return "forkserver" if env == _FORKSERVER_ENV else "spawn"


@contextlib.contextmanager
def _restored_environ(keys) -> Iterator[None]:
    """Put this process's environment variables ``keys`` back as they were on exit."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def total_threads(client) -> int:
    """Worker threads of the cluster: planned ones of a local cluster :func:`connect` started
    (its workers may still be starting), else those of the workers connected now (at least one
    is waited for)."""
    planned = getattr(client, "eoflow_local_threads", None)
    if planned:
        return int(planned)
    client.wait_for_workers(1, timeout=120)
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers))


def dashboard_link(client) -> str:
    """The dashboard URL, or a note when the scheduler runs none."""
    try:
        return client.dashboard_link
    except Exception:
        return "(no dashboard)"
