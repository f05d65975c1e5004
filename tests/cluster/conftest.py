"""Real Dask processes on 127.0.0.1: a ``dask scheduler`` and two ``dask worker`` processes.

Self-contained (no imports from the test tree) so it can move to the top-level conftest as is.
The command lines are those of ``cluster/processes/README.md``, with random free ports, the
dashboards off, one thread per worker, and a scheduler idle timeout so that a killed test
session cannot leave processes behind for long.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``python -m dask ARGS`` in its own process group, output to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started (nanny + its worker), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


@contextlib.contextmanager
def dask_process_cluster(workdir: Path, n_workers: int = 2, timeout: float = 90.0) -> Iterator[str]:
    """Run a scheduler and ``n_workers`` worker processes on 127.0.0.1; yield the address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[tuple[subprocess.Popen, Path]] = []
    log = workdir / "scheduler.log"
    procs.append((_start(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                          "--no-dashboard", "--idle-timeout", "600s"], log), log))  # fmt: skip
    try:
        for i in range(n_workers):
            log = workdir / f"worker-{i}.log"
            args = [
                "worker", address, "--host", "127.0.0.1", "--name", f"w{i}", "--nthreads", "1",
                "--nworkers", "1", "--memory-limit", "1GiB", "--no-dashboard",
                "--local-directory", str(workdir / f"w{i}"), "--death-timeout", "60",
            ]  # fmt: skip
            procs.append((_start(args, log), log))
        _wait_for_workers(address, n_workers, timeout, procs)
        yield address
    finally:
        for proc, _ in reversed(procs):
            _stop(proc)


def _wait_for_workers(
    address: str, n: int, timeout: float, procs: list[tuple[subprocess.Popen, Path]]
) -> None:
    from distributed import Client

    try:
        with Client(address, timeout=f"{timeout:.0f}s") as client:
            client.wait_for_workers(n, timeout=timeout)
    except Exception as exc:
        logs = "\n".join(f"--- {p.name}\n{_tail(p)}" for _, p in procs)
        raise RuntimeError(f"dask processes did not come up: {exc}\n{logs}") from exc


@pytest.fixture(scope="session")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address (``tcp://127.0.0.1:PORT``) of a real scheduler with two worker processes."""
    with dask_process_cluster(tmp_path_factory.mktemp("dask-processes")) as address:
        yield address
