"""Scale curve of the full eoflow pipeline on the synthetic source (issue 5).

``python -m benchmarks.scale.pipeline --tiles 1 4 16 64`` runs ingest -> features -> sample (the
per-pixel stages; training works on the samples only) for N tiles of 512 x 512 px x 25 dates (15-day revisit over 2021) through a
LocalCluster of 2 workers x 1 thread (2 GiB each), polling the RSS of every worker process, and
appends one JSON line per size to ``benchmarks/scale/pipeline.jsonl`` plus a table on stdout.
All input data are SYNTHETIC (``eoflow.sources.synthetic``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


def _config(n_tiles: int, tmp: Path) -> Path:
    import yaml

    side = math.isqrt(n_tiles)
    assert side * side == n_tiles, "use square tile counts"
    size_m = 512 * 10 * side - 1.0
    x0, y0 = 500_000.0, 5_100_000.0  # UTM 33N
    aoi = {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + size_m, y0], [x0 + size_m, y0 + size_m],
                                              [x0, y0 + size_m], [x0, y0]]]}  # fmt: skip
    aoi_path = tmp / "aoi.geojson"
    aoi_path.write_text(
        json.dumps({**aoi, "crs": {"type": "name", "properties": {"name": "EPSG:32633"}}})
    )
    cfg = {
        "name": f"scale-{n_tiles}", "aoi": {"path": str(aoi_path)}, "start": "2021-01-01", "end": "2021-12-31",
        "grid": {"tile_size_px": 512, "chunk_px": 256, "origin": [x0, y0 + size_m + 1.0]},
        "source": {"kind": "synthetic", "revisit_days": 15, "seed": 0}, "reference": {"kind": "synthetic"},
        "sampling": {"fraction": 0.02}, "model": {"n_estimators": 30},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB", "batch_tiles": 4},
    }  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Poller(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            for p in me.children(recursive=True):
                try:
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    continue
            time.sleep(0.1)


def run_size(n_tiles: int) -> dict:
    """One pipeline run; returns the measurements."""
    from eoflow.config import load_config
    from eoflow.pipeline import run_pipeline

    tmp = Path(tempfile.mkdtemp(prefix=f"eoflow-scale-{n_tiles}-"))
    try:
        cfg = load_config(_config(n_tiles, tmp))
        poller = _Poller()
        poller.start()
        t0, cpu0 = time.perf_counter(), psutil.Process().cpu_times()
        ctx = run_pipeline(
            cfg,
            tmp / "run",
            stages=("ingest", "features", "sample"),
            quiet=True,
        )
        wall = time.perf_counter() - t0
        poller.stop.set()
        poller.join()
        workers = sorted((v for v in poller.peaks.values() if v > 150 * 2**20), reverse=True)[:2]
        dates = (
            len(
                json.loads((tmp / "run" / "manifest.json").read_text())["inputs"]["source"].get(
                    "items", []
                )
            )
            or 25
        )
        pixel_dates = n_tiles * 512 * 512 * dates
        return {
            "tiles": n_tiles, "wall_s": round(wall, 1), "stages_s": ctx.timings,
            "pixel_dates_per_s_per_core": round(pixel_dates / wall / 2),
            "worker_peak_rss_mib": [round(w / 2**20) for w in workers],
            "client_peak_rss_mib": round(psutil.Process().memory_info().rss / 2**20),
            "failed_tiles": sum(s.get("state") == "failed" for s in ctx.status.values()),
            "cpu_user_s_client": round(psutil.Process().cpu_times().user - cpu0.user, 1),
        }  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()
    rows = []
    for n in args.tiles:
        row = run_size(n)
        rows.append(row)
        with (HERE / "pipeline.jsonl").open("a") as f:
            f.write(
                json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row})
                + "\n"
            )
        print(json.dumps(row), flush=True)
    print("| tiles | wall (s) | pixel-dates/s/core | worker peak RSS (MiB) |")
    print("|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['tiles']} | {r['wall_s']} | {r['pixel_dates_per_s_per_core']:,} | {r['worker_peak_rss_mib']} |"
        )


if __name__ == "__main__":
    main()
