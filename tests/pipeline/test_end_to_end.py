"""`eoflow run` end to end on the real sample through a real LocalCluster (2 worker processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from eoflow.stages.sample import open_samples

RUN_FILES = ["cube.zarr", "features.zarr", "samples.zarr", "model/model.txt", "model/model.json",
             "prediction.zarr", "prediction.tif", "metrics.json", "report.html", "manifest.json",
             "figures/confusion_matrix.png", "figures/prediction_vs_reference.png", "tiles.json"]  # fmt: skip


def eoflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "eoflow.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, request):
    import yaml

    root = Path(__file__).resolve().parents[2]
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = yaml.safe_load((root / "configs" / "sample.yaml").read_text())
    for key in ("aoi", "reference"):
        cfg[key]["path"] = str((root / "configs" / cfg[key]["path"]).resolve())
    cfg["source"]["catalog"] = str((root / "configs" / cfg["source"]["catalog"]).resolve())
    cfg["cluster"] = {"n_workers": 2, "threads_per_worker": 1}
    cfg["model"]["n_estimators"] = 60
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "run"
    t0 = time.time()
    proc = eoflow("run", str(tmp / "c.yaml"), "--out", str(out))
    return {
        "proc": proc,
        "out": out,
        "config": tmp / "c.yaml",
        "cfg": cfg,
        "tmp": tmp,
        "wall": time.time() - t0,
    }


def test_run_exits_zero_and_writes_the_run_directory(finished_run):
    proc, out = finished_run["proc"], finished_run["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert "Dask dashboard: http://127.0.0.1:" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["tiles"] == 9 and summary["failed_tiles"] == 0


def test_metrics_have_every_key(finished_run):
    m = json.loads((finished_run["out"] / "metrics.json").read_text())
    for key in ("overall_accuracy", "f1_weighted", "f1_macro", "kappa", "per_class",
                "confusion_matrix", "train_tiles", "test_tiles"):  # fmt: skip
        assert key in m
    assert 0.6 < m["overall_accuracy"] <= 1.0
    assert set(m["train_tiles"]).isdisjoint(m["test_tiles"])


def test_manifest_records_inputs_versions_seeds(finished_run):
    man = json.loads((finished_run["out"] / "manifest.json").read_text())
    assert man["seeds"] == {"sampling": 42, "split": 42, "model": 42}
    assert "lightgbm" in man["versions"] and "dask" in man["versions"]
    assert len(man["inputs"]["source"]["items"]) == 36
    assert set(man["timings_s"]) == {"ingest", "features", "sample", "train", "predict", "report"}


def test_resume_of_finished_run_writes_nothing(finished_run):
    out = finished_run["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = eoflow("run", str(finished_run["config"]), "--out", str(out), "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_rerun_without_resume_is_refused(finished_run):
    proc = eoflow("run", str(finished_run["config"]), "--out", str(finished_run["out"]))
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1
        and "--resume" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_prediction_cog_has_colormap_and_grid(finished_run):
    import rasterio

    with rasterio.open(finished_run["out"] / "prediction.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.crs.to_epsg() == 32633
        assert src.colormap(1)[2][:3] != (0, 0, 0)
        classes = set(np.unique(src.read(1)).tolist())
    assert classes <= {0, 1, 2, 3, 4, 8}


def test_sampling_identical_across_chunks_and_workers(finished_run):
    """Same samples with another spatial chunking and one worker."""
    import yaml

    cfg = dict(finished_run["cfg"])
    cfg["grid"] = {**cfg["grid"], "chunk_px": 16}
    cfg["cluster"] = {"n_workers": 1, "threads_per_worker": 1}
    path = finished_run["tmp"] / "c16.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out2 = finished_run["tmp"] / "run16"
    proc = eoflow("sample", str(path), "--out", str(out2), "--quiet")
    assert proc.returncode == 2 and "run the 'features' stage first" in proc.stderr
    for stage in ("ingest", "features", "sample"):
        proc = eoflow(stage, str(path), "--out", str(out2), "--quiet")
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = open_samples(finished_run["out"] / "samples.zarr"), open_samples(out2 / "samples.zarr")
    assert zarr.open_group(str(out2 / "features.zarr"), mode="r")["32633_0_-1"]["NDVI"].chunks == (
        25,
        16,
        16,
    )
    order = lambda s: np.lexsort((s["col"], s["row"], s["tile"]))  # noqa: E731
    for key in ("X", "y", "row", "col", "tile"):
        np.testing.assert_array_equal(a[key][order(a)], b[key][order(b)])
