"""Run a command and measure its whole process tree: wall, CPU, peak RSS (tree and per process).

* **wall**: ``time.perf_counter`` around the child, from spawn to exit (interpreter start, imports,
  cluster or executor start-up and shutdown included -- what a user waits for).
* **CPU**: ``resource.getrusage(RUSAGE_CHILDREN)`` before/after (user + system of every descendant
  that was waited for), cross-checked with the last psutil reading of each process seen; the larger
  is reported, so a worker that is never reaped still counts.
* **peak RSS (tree)**: the largest sum of RSS over the child and all its descendants, polled every
  ``interval`` seconds with psutil. Shared pages are counted once per process, so this is an upper
  bound (forked workers share their parent's pages).
* **peak RSS (one process)**: the largest RSS of any single process, from polling and from
  ``ru_maxrss`` of the reaped children; also split into the main process (client / executor
  parent) and the largest child process (a worker, when workers are processes).
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


@dataclass
class Measurement:
    """What :func:`measure` returns (bytes and seconds)."""

    cmd: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    cpu_rusage_s: float
    cpu_polled_s: float
    peak_tree_rss: int
    peak_proc_rss: int
    peak_main_rss: int
    peak_child_rss: int
    max_processes: int
    samples: int
    log_tail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        return asdict(self)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def measure(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
    timeout: float | None = None,
) -> Measurement:
    """Run ``cmd`` to completion and measure it (stdout and stderr go to ``log``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    log_fh = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=cwd, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    peak_tree = peak_proc = max_procs = n_samples = 0
    cpu_seen: dict[tuple[int, float], float] = {}
    peaks: dict[tuple[int, float], int] = {}
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak_tree, peak_proc, max_procs, n_samples
        while not stop.is_set():
            total = 0
            procs = _tree(proc)
            for p in procs:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        ct = p.cpu_times()
                        key = (p.pid, p.create_time())
                except psutil.Error:
                    continue
                total += rss
                peak_proc = max(peak_proc, rss)
                peaks[key] = max(peaks.get(key, 0), rss)
                cpu_seen[key] = ct.user + ct.system
            peak_tree = max(peak_tree, total)
            max_procs = max(max_procs, len(procs))
            n_samples += 1
            stop.wait(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        rc = proc.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        for p in reversed(_tree(proc)):
            with contextlib.suppress(psutil.Error):
                p.kill()
        rc = proc.wait()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if log:
        log_fh.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ru = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_polled = sum(cpu_seen.values())
    peak_proc = max(peak_proc, after.ru_maxrss * 1024 if after.ru_maxrss > before.ru_maxrss else 0)
    peak_main = max((v for (pid, _), v in peaks.items() if pid == proc.pid), default=0)
    peak_child = max((v for (pid, _), v in peaks.items() if pid != proc.pid), default=0)
    tail = ""
    if log and Path(log).exists():
        tail = Path(log).read_bytes()[-3000:].decode(errors="replace")
    return Measurement(
        cmd=[str(c) for c in cmd],
        returncode=rc,
        wall_s=wall,
        cpu_s=max(cpu_ru, cpu_polled),
        cpu_rusage_s=cpu_ru,
        cpu_polled_s=cpu_polled,
        peak_tree_rss=peak_tree,
        peak_proc_rss=peak_proc,
        peak_main_rss=peak_main,
        peak_child_rss=peak_child,
        max_processes=max_procs,
        samples=n_samples,
        log_tail=tail,
    )
