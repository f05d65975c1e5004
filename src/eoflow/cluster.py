"""Connect to Dask: a LocalCluster sized to the machine (default) or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from eoflow.config import ClusterConfig
from eoflow.errors import ClusterError

__all__ = ["connect", "dashboard_link"]


def _local_sizes(cfg: ClusterConfig) -> tuple[int, int]:
    cores = os.cpu_count() or 1
    n = cfg.n_workers or max(1, min(cores, 4) if cores < 8 else cores // 2)
    threads = cfg.threads_per_worker or max(1, cores // n)
    return n, threads


@contextlib.contextmanager
def connect(cfg: ClusterConfig, *, address: str | None = None, quiet: bool = False) -> Iterator:
    """Yield a ``distributed.Client``; close what we started on exit.

    Parameters
    ----------
    cfg
        The run's cluster section.
    address
        Overrides ``cfg.address`` (the CLI's ``--scheduler``).
    """
    from distributed import Client, LocalCluster

    address = address or cfg.address
    cluster = None
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
            n, threads = _local_sizes(cfg)
            net = {"host": "127.0.0.1", "protocol": "tcp://"}  # loopback only, threads or processes
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=threads, processes=cfg.processes,
                dashboard_address=cfg.dashboard_address, memory_limit=cfg.memory_limit,
                silence_logs=logging.CRITICAL, **net,
            )  # fmt: skip
            client = Client(cluster)
        if not quiet:
            print(f"eoflow: Dask dashboard: {dashboard_link(client)}", file=sys.stderr)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def dashboard_link(client) -> str:
    """The dashboard URL, or a note when the scheduler runs none."""
    try:
        return client.dashboard_link
    except Exception:
        return "(no dashboard)"
