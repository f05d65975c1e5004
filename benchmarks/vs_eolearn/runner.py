"""``run``: both systems on the same inputs, alternating, each measured as a whole process tree.

For each size (patches): 1 patch with 1 worker (``repeats`` times, median reported), 16 and 64
patches with 2 workers (once). The systems alternate: every round (a repeat of a size) swaps which
system goes first, so slow drifts of a shared machine hit both. After the first repeat of a
size, the outputs of both are compared (:mod:`benchmarks.vs_eolearn.checks`) and then deleted.

Every run appends one JSON line to ``benchmarks/.work/results/<stamp>.jsonl`` (the first line is
the context record); ``report`` turns the newest file into ``RESULTS.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.vs_eolearn import common
from benchmarks.vs_eolearn.measure import measure
from benchmarks.vs_eolearn.venv import EOLEARN_VERSION, eolearn_python, eolearn_versions

SYSTEMS = ("eo-learn", "eoflow")
JEMALLOC = "eo-learn+jemalloc"
SETTLE_S = 2.0
"""Pause after flushing the previous run's writes, before a run starts (outside its timing)."""
REPEATED_UP_TO = 16
"""Sizes up to this many patches run ``repeats`` times each (median): a 16-patch eoflow run takes
~11 s, where this VM's run-to-run noise (10-30 %) would decide a single run's ratio."""
"""eo-learn with jemalloc preloaded, as eoflow's workers: what the allocator alone gives it."""


def workers_for(n: int) -> int:
    """1 worker for a single patch, 2 otherwise (the issue's protocol)."""
    return 1 if n == 1 else 2


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def context(sizes: list[int], work: Path = common.WORK) -> dict:
    """Machine, versions and data description (the first JSON line)."""
    import importlib.metadata as md

    import psutil

    def ver(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT,
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        commit = "?"
    base = common.load_base(work)
    return {
        "record": "context",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "machine": {
            "host": platform.node(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "other_users_procs": len(psutil.pids()),
        },
        "versions": {
            "python": platform.python_version(),
            "eoflow": ver("eoflow"),
            "dask": ver("dask"),
            "distributed": ver("distributed"),
            "xarray": ver("xarray"),
            "zarr": ver("zarr"),
            "numba": ver("numba"),
            "numpy": ver("numpy"),
            "eolearn_venv": eolearn_versions(work),
        },
        "data": {
            "source": str(base.get("source", "?")),
            "base_shape": list(base["NDVI"].shape),
            "patch_shape": [common.N_DATES, common.PATCH_PX, common.PATCH_PX],
            "sizes": sizes,
            "features": list(common.FEATURES),
            "synthetic": list(common.SYNTHETIC_BANDS),
            "grid": [str(t) for t in common.grid_instants(base["times"])[[0, -1]]],
            "grid_n": len(common.grid_instants(base["times"])),
            "input_bytes_per_patch": {
                "eo-learn": common.dir_bytes(work / "inputs" / "eopatches" / common.tile_id(0)),
                "eoflow": common.dir_bytes(work / "inputs" / "cubes.zarr" / common.tile_id(0)),
            },
        },
    }


def _env(system: str) -> dict:
    env = common.thread_env()
    if system == JEMALLOC:
        from eoflow.cluster import find_jemalloc

        path = find_jemalloc()
        if path is None:
            raise SystemExit(
                "--eolearn-jemalloc needs libjemalloc.so.2 (apt-get install libjemalloc2)"
            )
        env.update(LD_PRELOAD=path, MALLOC_CONF="dirty_decay_ms:1000,muzzy_decay_ms:0")
    return env


def _command(system: str, n: int, workers: int, out: Path, result: Path, work: Path) -> list[str]:
    if system.startswith("eo-learn"):
        return [str(eolearn_python(work)), "-m", "benchmarks.vs_eolearn.eolearn_chain", "run",
                "--inputs", str(work / "inputs" / "eopatches"), "--n", str(n),
                "--workers", str(workers), "--out", str(out), "--result", str(result)]  # fmt: skip
    return [sys.executable, "-m", "benchmarks.vs_eolearn.eoflow_chain",
            "--store", str(work / "inputs" / "cubes.zarr"), "--n", str(n),
            "--workers", str(workers), "--out", str(out), "--result", str(result)]  # fmt: skip


def run_one(system: str, n: int, rep: int, work: Path, timeout: float | None) -> dict:
    """Run one system once on ``n`` patches and return its measurement record."""
    workers = workers_for(n)
    tag = {"eo-learn": "eolearn", JEMALLOC: "eolearn-jemalloc"}.get(
        system, "eoflow"
    ) + f"-{n}-{rep}"
    out, result = work / "out" / tag, work / "out" / f"{tag}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    cmd = _command(system, n, workers, out, result, work)
    print(f"run: {system:8s} {n:3d} patch(es), {workers} worker(s), repeat {rep} ...",
          end="", file=sys.stderr, flush=True)  # fmt: skip
    # the previous run's outputs (eo-learn writes 2.4 GB at 16 patches) would otherwise be
    # flushed to disk by the kernel during this run, on the same two cores: flush them first
    os.sync()
    time.sleep(SETTLE_S)
    m = measure(cmd, cwd=common.ROOT, env=_env(system), log=work / "out" / f"{tag}.log",
                timeout=timeout)  # fmt: skip
    inner = json.loads(result.read_text()) if result.exists() else {}
    rec = {
        "record": "run",
        "system": system,
        "patches": n,
        "workers": workers,
        "repeat": rep,
        "ok": m.returncode == 0 and bool(inner) and not inner.get("failed"),
        "wall_s": m.wall_s,
        "cpu_s": m.cpu_s,
        "peak_tree_rss": m.peak_tree_rss,
        "peak_proc_rss": m.peak_proc_rss,
        "peak_main_rss": m.peak_main_rss,
        "peak_child_rss": m.peak_child_rss,
        "max_processes": m.max_processes,
        "output_bytes": common.dir_bytes(out),
        "pixel_dates": common.pixel_dates(n),
        "throughput_px_dates_per_s_per_core": common.pixel_dates(n) / m.wall_s / workers,
        "stage_seconds": inner.get("stage_seconds", {}),
        "inner": {k: v for k, v in inner.items() if k not in ("stage_seconds",)},
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "out": str(out),
    }
    if not rec["ok"]:
        rec["log_tail"] = m.log_tail
    print(f" {m.wall_s:7.1f} s wall, {m.cpu_s:7.1f} s CPU, "
          f"{m.peak_tree_rss / 2**30:5.2f} GiB tree, {'ok' if rec['ok'] else 'FAILED'}",
          file=sys.stderr)  # fmt: skip
    return rec


def run_checks(n: int, eolearn_out: Path, eoflow_out: Path, work: Path) -> dict:
    """Equality checks on the first and last patch of a size, plus per-class sample totals."""
    from benchmarks.vs_eolearn import checks

    ks = sorted({0, n - 1})
    rec: dict = {"record": "checks", "patches": n, "checked": [common.tile_id(k) for k in ks]}
    try:
        rec["inputs"] = {common.tile_id(k): checks.check_inputs(k, work) for k in ks}
        rec["indices"] = checks.check_indices(0, work)
        rec["outputs"] = {
            common.tile_id(k): checks.check_outputs(k, eolearn_out, eoflow_out) for k in ks
        }
        rec["sample_totals"] = checks.sample_totals(n, eolearn_out, eoflow_out)
        rec["ok"] = (
            all(v["ok"] for v in rec["inputs"].values())
            and rec["indices"]["ok"]
            and all(v["ok"] for v in rec["outputs"].values())
            and rec["sample_totals"]["ok"]
        )
    except Exception as exc:  # a failed check is a result, not a crash of the benchmark
        rec["ok"] = False
        rec["error"] = f"{type(exc).__name__}: {exc}"
    print(f"checks: {n} patch(es): {'all equal' if rec['ok'] else 'DIFFERENCES (see report)'}",
          file=sys.stderr)  # fmt: skip
    return rec


def inputs_ready(n: int, work: Path = common.WORK) -> bool:
    """True when ``prepare`` has written ``n`` patches for both systems."""
    from eoflow.cube.store import read_ledger

    store = work / "inputs" / "cubes.zarr"
    eps = work / "inputs" / "eopatches"
    return all(
        read_ledger(store, common.tile_id(k)) is not None
        and (eps / common.tile_id(k) / ".complete").exists()
        for k in range(n)
    )


def run(
    sizes: list[int],
    *,
    repeats: int = 3,
    work: Path = common.WORK,
    timeout: float | None = 3600,
    keep_outputs: bool = False,
    jemalloc_sizes: tuple[int, ...] = (),
) -> Path:
    """Run the whole protocol; return the JSON-lines file."""
    from benchmarks.vs_eolearn.venv import ensure_eolearn_venv

    ensure_eolearn_venv(work)
    # bytecode for eoflow's own modules, as pip compiles eo-learn's at install (an editable
    # install is not compiled, and with PYTHONDONTWRITEBYTECODE every process would recompile)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "src/eoflow", "benchmarks/vs_eolearn"],
                   cwd=common.ROOT, stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    if not inputs_ready(max(sizes), work):
        raise SystemExit(f"inputs for {max(sizes)} patches are missing: run `prepare` first")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = work / "results" / f"{stamp}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)

    def emit(rec: dict) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    emit(context(sizes, work))
    print(f"eo-learn {EOLEARN_VERSION} vs eoflow; results -> {path}", file=sys.stderr)
    round_no = 0
    for n in sizes:
        reps = repeats if n <= REPEATED_UP_TO else 1  # medians where a run is short
        for rep in range(reps):
            order = SYSTEMS if round_no % 2 == 0 else SYSTEMS[::-1]
            round_no += 1
            recs = {s: run_one(s, n, rep, work, timeout) for s in order}
            for s in order:
                emit(recs[s])
            if rep == 0 and all(r["ok"] for r in recs.values()):
                emit(
                    run_checks(n, Path(recs["eo-learn"]["out"]), Path(recs["eoflow"]["out"]), work)
                )
            if n in jemalloc_sizes:  # after the pair, so it never sits between them
                recs[JEMALLOC] = run_one(JEMALLOC, n, rep, work, timeout)
                emit(recs[JEMALLOC])
            if not keep_outputs:
                for r in recs.values():
                    shutil.rmtree(r["out"], ignore_errors=True)
    # eoflow's ops one by one on patch 0 (own process; appends a "profile" record)
    subprocess.run([sys.executable, "-m", "benchmarks.vs_eolearn.profile", "--results", str(path)],
                   cwd=common.ROOT, env=common.thread_env(), stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    return path
