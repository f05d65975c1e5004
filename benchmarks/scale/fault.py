"""A worker SIGKILLed mid-run on a multi-process Dask cluster: extra time, identical outputs (issue 5).

``python -m benchmarks.scale.fault --tiles 16`` starts a real ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1 (the command lines of ``cluster/processes/README.md``,
1 thread and 1 GiB each), then runs ``eoflow run CONFIG --until sample --scheduler ADDRESS`` on N
SYNTHETIC tiles (512 x 512 px x 25 dates, as ``benchmarks.scale.pipeline``) twice, alternating:

* **undisturbed**;
* **killed**: once half of the tiles' features are written, one worker process gets SIGKILL; its
  nanny starts a new one and the scheduler recomputes what was lost.

It reports both wall times, the extra time, and whether every array of ``cube.zarr``,
``features.zarr`` and ``samples.zarr`` is bit-identical between the two runs; one JSON line per
pair goes to ``benchmarks/scale/fault.jsonl``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.scale.pipeline import _config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _process_cluster():
    """``dask_process_cluster`` from the cluster tests' conftest (loaded by path: not a package)."""
    path = ROOT / "tests" / "cluster" / "conftest.py"
    spec = importlib.util.spec_from_file_location("eoflow_cluster_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dask_process_cluster


def _run(config: Path, out: Path, address: str, kill_after: int | None) -> dict:
    """One ``eoflow run``; SIGKILL a worker once ``kill_after`` feature tiles are written."""
    from distributed import Client

    args = [sys.executable, "-m", "eoflow.cli.main", "run", str(config), "--out", str(out),
            "--until", "sample", "--scheduler", address, "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at = None
    if kill_after is not None:
        ledger = out / "ledger" / "features"
        while proc.poll() is None:
            if ledger.exists() and sum(1 for _ in ledger.iterdir()) >= kill_after:
                with Client(address) as client:
                    pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed_at = round(time.perf_counter() - t0, 1)
                break
            time.sleep(0.05)
    _, stderr = proc.communicate(timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"eoflow run failed (rc {proc.returncode}):\n{stderr[-3000:]}")
    with Client(address) as client:  # the nanny's replacement must be up before the next run
        client.wait_for_workers(2, timeout=120)
    return {"wall_s": round(wall, 1), "killed_at_s": killed_at}


def _arrays(store: Path) -> dict[str, Path]:
    """Every Zarr array under ``store`` (relative path -> folder)."""
    return {
        str(p.parent.relative_to(store)): p.parent
        for p in sorted(store.rglob("zarr.json"))
        if json.loads(p.read_text()).get("node_type") == "array"
    }


def identical(a_run: Path, b_run: Path) -> dict[str, object]:
    """Compare every array of the three per-pixel stores of two runs, bit for bit."""
    import zarr

    result: dict[str, object] = {}
    for name in ("cube.zarr", "features.zarr", "samples.zarr"):
        a_arrays, b_arrays = _arrays(a_run / name), _arrays(b_run / name)
        same = sorted(a_arrays) == sorted(b_arrays)
        diff = []
        for rel in a_arrays if same else []:
            a = zarr.open_array(str(a_arrays[rel]), mode="r")[...]
            b = zarr.open_array(str(b_arrays[rel]), mode="r")[...]
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                diff.append(rel)
        result[name] = {"arrays": len(a_arrays), "identical": same and not diff, "differ": diff}
    return result


def run_pair(n_tiles: int) -> dict:
    """Undisturbed and killed runs of ``n_tiles`` on one process cluster."""
    tmp = Path(tempfile.mkdtemp(prefix=f"eoflow-fault-{n_tiles}-"))
    try:
        config = _config(n_tiles, tmp)
        with _process_cluster()(tmp) as address:
            calm = _run(config, tmp / "calm", address, None)
            hit = _run(config, tmp / "killed", address, max(1, n_tiles // 2))
            same = identical(tmp / "calm", tmp / "killed")
        return {
            "tiles": n_tiles,
            "undisturbed_s": calm["wall_s"],
            "killed_s": hit["wall_s"],
            "killed_at_s": hit["killed_at_s"],
            "extra_s": round(hit["wall_s"] - calm["wall_s"], 1),
            "extra_pct": round(100 * (hit["wall_s"] / calm["wall_s"] - 1), 1),
            "identical": all(v["identical"] for v in same.values()),
            "stores": same,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[16])
    args = ap.parse_args(argv)
    rows = []
    for n in args.tiles:
        row = run_pair(n)
        rows.append(row)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with (HERE / "fault.jsonl").open("a") as f:
            f.write(json.dumps({"when": stamp, **row}) + "\n")
        print(json.dumps(row), flush=True)
    print(
        "| tiles | undisturbed (s) | worker killed at (s) | with the kill (s) | extra | identical |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['tiles']} | {r['undisturbed_s']} | {r['killed_at_s']} | {r['killed_s']} | "
              f"{r['extra_s']} s ({r['extra_pct']} %) | {'yes' if r['identical'] else 'NO'} |")  # fmt: skip
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
