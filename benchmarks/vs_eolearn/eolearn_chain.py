"""The seed's chain with eo-learn 1.5.7 through ``EOExecutor`` (runs in eo-learn's own venv).

Modelled on eo-learn's land-cover example, with the seed's parameters::

    load -> NDWI, NDBI (NormalizedDifferenceIndexTask on the synthetic BANDS; NDVI is real)
         -> IS_VALID = IS_DATA & ~CLM (ZipFeatureTask) -> VALID_COUNT (MapFeatureTask)
         -> FEATURES = merge(NDVI, NDWI, NDBI, BANDS)
         -> drop frames with valid fraction <= 0.8 (SimpleFilterTask)
         -> LinearInterpolationTask(mask IS_VALID, 2017-01-01..2017-12-31 every 15 days)
         -> ErosionTask(LULC -> LULC_ERODED, disk_radius=3)   # = the 3x3 cross, see below
         -> save features (FEATURES, VALID_COUNT, LULC, LULC_ERODED)
         -> FractionSamplingTask(0.25 of LULC_ERODED, excluding 0) -> save samples

Choices (all cost-neutral for eo-learn):

* ``ErosionTask(disk_radius=3)``: in 1.5.7 the radius goes to OpenCV as the *kernel size*
  (``getStructuringElement(MORPH_ELLIPSE, (r, r))``), so ``disk_radius=1`` is a 1x1 kernel that
  erodes nothing and ``3`` is the 3x3 cross, i.e. the seed's radius-1 disk. OpenCV never erodes
  array-edge pixels (the border acts as "same class").
* ``LinearInterpolationTask(scale_time=1)``: times in seconds. The default (3600) rounds every
  acquisition time to whole hours from the first one, which moves NDVI values by up to ~1e-3 and
  would make a 1e-5 comparison meaningless; the work done is identical.
* eo-learn evaluates the 15-day grid at the first acquisition's time of day (10:00:08) while
  labelling it with midnight dates; eoflow is evaluated at the same instants (see
  :func:`benchmarks.vs_eolearn.common.grid_instants`).

Usage (from the repository root, with eo-learn's interpreter)::

    venv-eolearn/bin/python -m benchmarks.vs_eolearn.eolearn_chain write-inputs --n 4 --out DIR
    venv-eolearn/bin/python -m benchmarks.vs_eolearn.eolearn_chain run --inputs DIR --n 4 \
        --workers 2 --out OUT --result result.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.vs_eolearn import common

# eo-learn node name -> benchmark stage
NODE_STAGES = {
    "load": "read",
    "ndwi": "indices",
    "ndbi": "indices",
    "valid_mask": "masks",
    "valid_count": "masks",
    "merge": "merge",
    "filter": "filter",
    "interpolation": "interpolation",
    "erosion": "erosion",
    "save_features": "write",
    "sampling": "sampling",
    "save_samples": "write",
}


class ValidFraction:
    """Frame predicate: valid fraction of the frame > threshold (picklable for EOExecutor)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, frame: np.ndarray) -> bool:
        return bool(np.count_nonzero(frame) / frame.size > self.threshold)


def _bands(a: str, b: str) -> tuple[int, int]:
    """Positions of two synthetic bands in eo-learn's ``BANDS`` feature."""
    return common.SYNTHETIC_BANDS.index(a), common.SYNTHETIC_BANDS.index(b)


def _valid(is_data: np.ndarray, clm: np.ndarray) -> np.ndarray:
    return is_data.astype(bool) & ~clm.astype(bool)


def _count(mask: np.ndarray) -> np.ndarray:
    return np.count_nonzero(mask, axis=0).astype(np.uint8)


def build_workflow(inputs: str, out_features: str, out_samples: str):
    """The EOWorkflow and its named nodes."""
    from eolearn.core import (
        EONode,
        EOWorkflow,
        FeatureType,
        LoadTask,
        MapFeatureTask,
        MergeFeatureTask,
        OverwritePermission,
        SaveTask,
        ZipFeatureTask,
    )
    from eolearn.features import NormalizedDifferenceIndexTask, SimpleFilterTask
    from eolearn.features.extra.interpolation import LinearInterpolationTask
    from eolearn.geometry import ErosionTask
    from eolearn.ml_tools import FractionSamplingTask

    D, M, MT = FeatureType.DATA, FeatureType.MASK, FeatureType.MASK_TIMELESS
    load = EONode(LoadTask(inputs), name="load")
    nd = NormalizedDifferenceIndexTask
    ndwi = EONode(nd((D, "BANDS"), (D, "NDWI"), bands=_bands("B03", "B08")), [load], name="ndwi")
    ndbi = EONode(nd((D, "BANDS"), (D, "NDBI"), bands=_bands("B11", "B08")), [ndwi], name="ndbi")
    valid = EONode(ZipFeatureTask({M: ["IS_DATA", "CLM"]}, (M, "IS_VALID"), _valid), [ndbi],
                   name="valid_mask")  # fmt: skip
    count = EONode(MapFeatureTask((M, "IS_VALID"), (MT, "VALID_COUNT"), _count), [valid],
                   name="valid_count")  # fmt: skip
    merge = EONode(MergeFeatureTask({D: ["NDVI", "NDWI", "NDBI", "BANDS"]}, (D, "FEATURES")),
                   [count], name="merge")  # fmt: skip
    filt = EONode(
        SimpleFilterTask((M, "IS_VALID"), ValidFraction(common.MIN_VALID_FRACTION)),
        [merge],
        name="filter",
    )
    interp = EONode(
        LinearInterpolationTask(
            (D, "FEATURES"),
            mask_feature=(M, "IS_VALID"),
            copy_features=[(MT, "LULC"), (MT, "VALID_COUNT")],
            resample_range=(common.GRID_START, common.GRID_END, common.GRID_STEP_DAYS),
            scale_time=1,
        ),
        [filt],
        name="interpolation",
    )
    erosion = EONode(ErosionTask((MT, "LULC", "LULC_ERODED"), disk_radius=3), [interp],
                     name="erosion")  # fmt: skip
    save_f = EONode(
        SaveTask(out_features, features=[(D, "FEATURES"), (MT, "VALID_COUNT"), (MT, "LULC"),
                                         (MT, "LULC_ERODED")],
                 overwrite_permission=OverwritePermission.OVERWRITE_FEATURES),
        [erosion], name="save_features",
    )  # fmt: skip
    sampling = EONode(
        FractionSamplingTask(
            [(D, "FEATURES", "FEATURES_SAMPLED"), (MT, "LULC_ERODED", "LULC_ERODED_SAMPLED")],
            (MT, "LULC_ERODED"),
            fraction=common.SAMPLE_FRACTION,
            exclude_values=list(common.SAMPLE_EXCLUDE),
        ),
        [save_f],
        name="sampling",
    )
    save_s = EONode(
        SaveTask(out_samples, features=[(D, "FEATURES_SAMPLED"), (MT, "LULC_ERODED_SAMPLED")],
                 overwrite_permission=OverwritePermission.OVERWRITE_FEATURES),
        [sampling], name="save_samples",
    )  # fmt: skip
    wf = EOWorkflow.from_endnodes(save_s)
    return wf, {"load": load, "sampling": sampling, "save_features": save_f, "save_samples": save_s}


def run(inputs: Path, n: int, workers: int, out: Path, result: Path) -> dict:
    """Run the chain on patches ``0..n-1`` with ``workers`` processes; write per-stage stats."""
    from eolearn.core import EOExecutor

    t_start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # created up front: eo-learn's SaveTask creates its folder in every worker process, and two
    # processes doing it at once fail with "File exists" (seen once in a 64-patch run)
    (out / "features").mkdir()
    (out / "samples").mkdir()
    wf, nodes = build_workflow(str(inputs), str(out / "features"), str(out / "samples"))
    exec_args = []
    for k in range(n):
        folder = common.tile_id(k)
        exec_args.append({
            nodes["load"]: {"eopatch_folder": folder},
            nodes["save_features"]: {"eopatch_folder": folder},
            nodes["sampling"]: {"seed": common.SAMPLE_SEED + k},
            nodes["save_samples"]: {"eopatch_folder": folder},
        })  # fmt: skip
    executor = EOExecutor(wf, exec_args, save_logs=False)
    t0 = time.perf_counter()
    results = executor.run(workers=workers, multiprocess=True, disable=True)
    t_exec = time.perf_counter() - t0
    failed = [r.error_node_uid for r in results if r.workflow_failed()]
    stages = dict.fromkeys(common.STAGES, 0.0)
    for r in results:
        for st in r.stats.values():
            stage = NODE_STAGES.get(st.node_name, "other")
            stages[stage] += (st.end_time - st.start_time).total_seconds()
    info = {
        "system": "eo-learn",
        "patches": n,
        "workers": workers,
        "exec_seconds": t_exec,
        "process_seconds": time.perf_counter() - t_start,
        "stage_seconds": stages,
        "failed": len(failed),
        "errors": [
            str(r.stats[r.error_node_uid].exception_info.exception)[:300]
            for r in results
            if r.workflow_failed()
        ][:3],
    }
    common.write_json(result, info)
    return info


def write_inputs(n: int, out: Path, start: int = 0, step: int = 1) -> None:
    """Write patches ``start, start + step, ... < n`` as EOPatches (eo-learn's format) under ``out``."""
    from eolearn.core import EOPatch, FeatureType, OverwritePermission
    from sentinelhub import CRS, BBox

    base = common.load_base()
    times = [
        dt.datetime.fromisoformat(str(t)) for t in common.times_of(base).astype("datetime64[s]")
    ]
    for k in range(start, n, step):
        path = out / common.tile_id(k)
        if (path / ".complete").exists():
            continue
        p = common.make_patch(base, k)
        a, _, c, _, e, f = common.tile_transform(k)
        bbox = BBox((c, f + e * common.PATCH_PX, c + a * common.PATCH_PX, f),
                    crs=CRS(common.CRS_EPSG))  # fmt: skip
        patch = EOPatch(bbox=bbox, timestamps=times)
        patch[FeatureType.DATA, "NDVI"] = p["NDVI"][..., None]
        patch[FeatureType.DATA, "BANDS"] = np.stack([p[b] for b in common.SYNTHETIC_BANDS], -1)
        patch[FeatureType.MASK, "CLM"] = p["CLM"][..., None]
        patch[FeatureType.MASK, "IS_DATA"] = p["IS_DATA"][..., None]
        patch[FeatureType.MASK_TIMELESS, "LULC"] = p["LULC"][..., None]
        patch.save(str(path), overwrite_permission=OverwritePermission.OVERWRITE_FEATURES)
        (path / ".complete").write_text("ok\n")


def indices(inputs: Path, k: int, out: Path) -> None:
    """NDWI and NDBI of patch ``k`` by eo-learn's task (for the equality check)."""
    from eolearn.core import EOPatch, FeatureType
    from eolearn.features import NormalizedDifferenceIndexTask

    patch = EOPatch.load(str(inputs / common.tile_id(k)), features=[(FeatureType.DATA, "BANDS")])
    D, nd = FeatureType.DATA, NormalizedDifferenceIndexTask
    patch = nd((D, "BANDS"), (D, "NDWI"), bands=_bands("B03", "B08")).execute(patch)
    patch = nd((D, "BANDS"), (D, "NDBI"), bands=_bands("B11", "B08")).execute(patch)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "NDWI.npy", patch[D, "NDWI"][..., 0])
    np.save(out / "NDBI.npy", patch[D, "NDBI"][..., 0])


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="eolearn_chain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-inputs")
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--start", type=int, default=0)
    w.add_argument("--step", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("--inputs", type=Path, required=True)
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--workers", type=int, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--result", type=Path, required=True)
    i = sub.add_parser("indices")
    i.add_argument("--inputs", type=Path, required=True)
    i.add_argument("--k", type=int, default=0)
    i.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "write-inputs":
        write_inputs(args.n, args.out, args.start, args.step)
    elif args.cmd == "run":
        info = run(args.inputs, args.n, args.workers, args.out, args.result)
        if info["failed"]:
            print(json.dumps(info["errors"]), file=sys.stderr)
            return 1
    else:
        indices(args.inputs, args.k, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
