"""``python -m benchmarks.vs_eolearn prepare|run|report|all [--sizes 1,16,64] [--repeats 3]``.

* ``prepare`` -- eo-learn's venv (``benchmarks/.work/venv-eolearn``), then inputs for
  ``max(sizes)`` patches for both systems (about 50 MB per patch for eo-learn, 12 MB for eoflow).
* ``run`` -- both systems on each size, alternating, measured; equality checks; JSON lines under
  ``benchmarks/.work/results/``.
* ``report`` -- ``benchmarks/vs_eolearn/RESULTS.md`` from the newest results.
* ``all`` -- the three in a row (what ``make bench`` runs).

Durations on a quiet 2-core machine (estimated; eo-learn dominates): prepare about 10 s per
patch (eo-learn writes gzip'd npy; inputs are kept and reused), run with ``--sizes 1,16`` about
10 min, with the default ``1,16,64`` about 35 min (eo-learn's 64-patch run alone about 20).
``--sizes 1,16`` is the short protocol when 64 patches take too long.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are positive patch counts, e.g. 1,16,64")
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_eolearn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("command", choices=("prepare", "run", "report", "all"))
    ap.add_argument("--sizes", type=_sizes, default=[1, 16, 64],
                    help="patch counts (default 1,16,64; 1 runs with 1 worker, others with 2)")  # fmt: skip
    ap.add_argument(
        "--repeats", type=int, default=3, help="repeats of the runs up to 16 patches (median)"
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per system run")
    ap.add_argument("--keep-outputs", action="store_true", help="keep both systems' outputs")
    ap.add_argument("--eolearn-jemalloc", type=_sizes, default=[],
                    help="sizes at which eo-learn also runs with jemalloc preloaded (default none)")  # fmt: skip
    ap.add_argument("--results", type=Path, action="append", default=None,
                    help="report: these JSON-lines files (repeatable; default: the newest)")  # fmt: skip
    args = ap.parse_args(argv)

    from benchmarks.vs_eolearn import prepare, report, runner

    if args.command in ("prepare", "all"):
        prepare.prepare(max(args.sizes))
    results = args.results
    if args.command in ("run", "all"):
        results = runner.run(args.sizes, repeats=args.repeats, timeout=args.timeout,
                             keep_outputs=args.keep_outputs,
                             jemalloc_sizes=tuple(args.eolearn_jemalloc))  # fmt: skip
    if args.command in ("report", "all"):
        report.report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
