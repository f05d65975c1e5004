"""``eoflow demo``, ``eoflow run`` and one command per stage."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eoflow.errors import InputError

__all__ = ["register", "sample_config_path"]

_STAGE_HELP = {
    "ingest": "search the source and write cube.zarr",
    "features": "masks, indices, frame filter, interpolation, reference labels -> features.zarr",
    "sample": "stratified pixel sampling -> samples.zarr",
    "train": "LightGBM training and validation -> model/, metrics.json",
    "predict": "wall-to-wall maps -> prediction.zarr, prediction.tif",
    "report": "figures/ and report.html",
}


def sample_config_path() -> Path:
    """The shipped sample's config (``configs/sample.yaml`` of a source checkout)."""
    root = Path(__file__).resolve().parents[3]
    path = root / "configs" / "sample.yaml"
    if not path.exists() or not (root / "data" / "sample" / "collection.json").exists():
        raise InputError("the shipped Slovenia sample was not found beside this eoflow install",
                         "run from a clone of the eoflow repository (make demo)")  # fmt: skip
    return path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://host:port)")
    p.add_argument("--resume", action="store_true",
                   help="finish a run in an existing directory (only missing tiles are computed)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output")


def register(subparsers) -> None:
    """Add demo, run and the stage commands."""
    p = subparsers.add_parser("demo", help="run everything on the shipped Slovenia sample")
    _common(p)
    p.set_defaults(func=_demo)
    p = subparsers.add_parser("run", help="run every stage from a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--until", choices=list(_STAGE_HELP), help="stop after this stage")
    _common(p)
    p.set_defaults(func=_run, stages=None)
    for stage, help_text in _STAGE_HELP.items():
        p = subparsers.add_parser(stage, help=f"stage only: {help_text}")
        p.add_argument("config", type=Path)
        _common(p)
        p.set_defaults(func=_run, stages=(stage,), resume_default=True)


def _check_out(out: Path, resume: bool, stages) -> None:
    if stages is None and not resume and (out / "manifest.json").exists():
        raise InputError(f"run directory {out} already holds a run",
                         "add --resume to finish or re-check it, or choose another --out")  # fmt: skip


def _execute(config: Path, args) -> int:
    from eoflow.config import load_config
    from eoflow.pipeline import STAGES, run_pipeline

    cfg = load_config(config)
    out = args.out or Path("runs") / cfg.name
    stages = args.stages or STAGES
    until = getattr(args, "until", None)
    if until:
        stages = STAGES[: STAGES.index(until) + 1]
    _check_out(out, args.resume, args.stages)
    t0 = time.perf_counter()
    ctx = run_pipeline(cfg, out, stages=tuple(stages), scheduler=args.scheduler, quiet=args.quiet,
                       settle_gc=args.settle_gc)  # fmt: skip
    failed = {t: s for t, s in ctx.status.items() if s.get("state") == "failed"}
    summary = {"run": str(out), "stages": list(stages), "wall_s": round(time.perf_counter() - t0, 1),
               "tiles": len(ctx.tiles), "failed_tiles": len(failed)}  # fmt: skip
    metrics = out / "metrics.json"
    if "train" in stages and metrics.exists():
        m = json.loads(metrics.read_text())
        summary.update(
            {k: round(m[k], 4) for k in ("overall_accuracy", "f1_weighted", "f1_macro", "kappa")}
        )
    print(json.dumps(summary))
    if failed:
        print(
            f"eoflow: {len(failed)} tile(s) failed; see {out / 'report.html'} or tiles.json",
            file=sys.stderr,
        )
        return 3 if len(failed) < len(ctx.tiles) else 2
    return 0


def _run(args) -> int:
    return _execute(args.config, args)


def _demo(args) -> int:
    args.stages = None
    if args.out is None:
        args.out = Path("runs") / "demo"
    return _execute(sample_config_path(), args)
