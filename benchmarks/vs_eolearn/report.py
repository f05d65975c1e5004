"""``report``: the newest (or a given) results file -> ``benchmarks/vs_eolearn/RESULTS.md``."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from benchmarks.vs_eolearn import common

GIB = 2**30
MB = 1e6

NOTES = """\
## How the two chains are set up (read before the numbers)

* **Inputs** (identical, checked bit for bit): the real 101 x 100 px x 68-date Slovenia patch
  (NDVI, CLM, IS_DATA from `data/sample/`, else `../shared/data/eolearn-example`) and the real
  `LULC.gpkg` rasterised onto it, mirror-tiled (`numpy.pad(mode="symmetric")` repeated, so no
  value is invented) into 500 x 500 px patches; patch *k* starts at offset `(37k mod 202,
  59k mod 200)`, so patches differ. The mirroring makes both systems' compression look better
  than on real scenes (the data repeat every 200 px).
* **Synthetic bands**: the chain merges the six bands of eo-learn's land-cover example (B02,
  B03, B04, B08, B11, B12; 9 feature channels with the three indices, as in issue 7's
  measurement) and NDWI/NDBI need B03/B08/B11; the sample only has real bands for 10 of the 68
  dates. They are **synthetic**, a deterministic model of the real NDVI, the real cloud mask and
  the season (`benchmarks/vs_eolearn/common.py::synthetic_bands`, quantised to 1e-4), labelled
  `synthetic` in the cube attributes. NDVI is the real band (neither system recomputes it).
  Each system gets the bands in its own storage: eo-learn float32 reflectance (as its
  `SentinelHubInputTask` delivers them), eoflow uint16 digital numbers with `scale` 1e-4 (as
  Sentinel-2 products store them and as eoflow's cube model keeps bands); eoflow's kernel reads
  `float32(DN) / 10000`, which equals eo-learn's float32 value bit for bit (checked on every
  patch compared, and for all 65,536 DN values in a test).
* **Chain** (both): NDWI, NDBI -> IS_VALID = IS_DATA & ~CLM and VALID_COUNT -> merge of
  NDVI, NDWI, NDBI, B02, B03, B04, B08, B11, B12 -> drop frames with valid fraction <= 0.8 ->
  masked linear interpolation onto 25 instants (2017-01-01 + 15 k days) -> erosion of each
  class -> save features -> fraction sampling 0.25 of each class of the eroded labels, class 0
  excluded -> save samples.
* **eo-learn 1.5.7** runs in its own venv (`benchmarks/.work/venv-eolearn`, with numba and
  scikit-learn, which it needs but does not declare) through `EOExecutor` (one process per
  worker; `workers=1` runs in the main process). Erosion is **`ErosionTask(disk_radius=3)`**: in
  1.5.7 the radius is passed to OpenCV as the *kernel size*, so `disk_radius=1` is a 1x1 kernel
  that erodes nothing, and 3 gives the 3x3 cross = the seed's radius-1 disk. OpenCV never erodes
  array-edge pixels. `LinearInterpolationTask(scale_time=1)` (seconds): the default 3600 rounds
  acquisition times to whole hours from the first one, which moves values by up to ~1e-3 and
  would make a 1e-5 comparison meaningless; the work is the same. eo-learn saves its
  interpolation in float64 (gzip level 1, its only npy mode in 1.5.7); its output bytes count it.
* **Grid instants**: eo-learn labels its grid with midnight dates but evaluates it at the first
  acquisition's time of day (2017-01-01T10:00:08 + 15 k days). eoflow is evaluated at those same
  instants here (its own `regular_grid` is at midnight), so values are compared like for like.
* **eoflow** runs `eoflow.stages.features.tile_features` (ops `masks`, `indices`, `fused`
  (one numba pass per chunk for indices, validity and interpolation), `morphology`; the tile's
  graph is fused once, so each chunk's reads go into the kernel's task) and
  `eoflow.stages.sample.sample_dataset` on a dask.distributed `LocalCluster`
  (`eoflow.cluster.connect`, n workers x 1 thread, processes, eoflow's default `retain`
  allocator), through eoflow's stage runner's sliding window (`eoflow.stages._runner.run_window`:
  one patch per worker thread computing, each patch's frame filter submitted at high priority a
  window ahead, the next patch's graph built while the others compute and submitted as soon as
  one finishes). The workers start in the background while the client starts the scheduler and
  opens the first patches: they are forks of a fork server started first thing
  (`eoflow._warm`: Dask, xarray, zarr, eoflow's task modules and numba's cached kernels loaded
  once; the server's CPU and memory are counted in the tree). The samples are gathered from the features in memory, in the same graph as their
  Zarr write, stay on the workers and are written to `samples.zarr` in whole chunks by the
  workers (`SampleWriter`; eoflow's pipeline runs the same functions in its own `sample` stage
  on `features.zarr`, so that stage can be re-run alone). Features in Zarr v3 with zstd level 1
  (eoflow's tile codec, chosen by measurement: see the codec table below; the prepared inputs
  keep the codec they were written with), samples Blosc LZ4 + shuffle. **Edge rule**: erosion
  uses `map_overlap` with depth = radius, so chunk edges never act as borders (a tile that is
  one chunk is eroded by one `map_blocks` task); the array edge is padded by replication, so
  (as with OpenCV) it never erodes a pixel by itself.
* **Measurement**: each system runs as a fresh process tree (interpreter start, imports, cluster
  or executor start-up included). Wall = spawn to exit; CPU = user + system of the whole tree
  (`getrusage(RUSAGE_CHILDREN)`, cross-checked with psutil); peak RSS (tree) = largest sum of RSS
  over the tree, polled every 50 ms (an upper bound: shared pages count once per process); peak
  RSS (largest process) = the "per worker" figure. Throughput = input pixel-dates (patches x
  500 x 500 x 68) / wall / workers. BLAS/OpenMP/numba pools are pinned to 1 thread in both.
  Per-stage times are seconds of worker compute per patch: eo-learn from `EOExecutor`'s node
  stats; eoflow from the Dask task stream, where Dask fuses neighbouring tasks (a fused task is
  charged to its heaviest recognised step, e.g. the Zarr write fused behind the interpolation
  counts as interpolation; unrecognised glue such as `getitem`/`concatenate` is "other").
  Task times are wall time inside each task, so on a busy machine they grow with the load.
* **Known differences** (reported by the checks, not hidden): eo-learn's interpolation is NaN
  after a pixel's last valid observation, eoflow holds the last valid value; per-class sample
  counts differ by one where `0.25 * n` ends in .5 with an even integer part (eo-learn rounds
  half to even, eoflow half up); eo-learn draws the sampled pixels at random (seeded per patch
  here), eoflow with its counter-based hash, so the pixels differ, the counts do not.
* **Allocator**: Dask's nanny starts workers with `MALLOC_TRIM_THRESHOLD_=65536` and glibc
  maps every array above 32 MB (a 68-date band chunk is 34-68 MB) afresh, so each chunk costs
  thousands of page faults and an `munmap`; on this VM reading one patch took ~1 s, mostly
  system time. eoflow's default `cluster.allocator: retain` (one glibc arena, no mmap, no
  trimming: freed chunk buffers are reused) reads it in 0.2 s; a worker's resident memory then
  stays at its high-water mark (measured: about 1.0-1.2 GiB here). jemalloc (`cluster.allocator:
  jemalloc`, decay 1 s) gave no gain on the whole chain earlier and stays opt-in. Two patches per
  worker thread in the window (`eoflow_chain --window 4`) were no faster on 2 cores and raised
  the worker peak (1.1-1.5 GiB against 1.0). `--eolearn-jemalloc 1,16` adds eo-learn runs with
  jemalloc preloaded.
* **Repeats**: sizes up to 16 patches run 3 times per system, alternating (medians reported);
  64 patches once. Before the runs eoflow's own modules are byte-compiled, as pip compiles
  eo-learn's at install. Before each run the previous run's writes are flushed to disk (`sync`,
  then 2 s), so neither system pays for the other's write-back (eo-learn writes 2.4 GB at 16
  patches, which the kernel otherwise flushed during the next run, on the same two cores).
* **Duration** (quiet 2-core machine): prepare about 1 s per patch once (inputs are reused by
  later runs), run with `--sizes 1,16` about 8 minutes, with `1,16,64` about 17 minutes, most of it
  eo-learn. Use `--sizes 1,16` when that is too long.
"""


def load(paths: list[Path] | None = None) -> tuple[list[Path], list[dict]]:
    """The records of ``paths`` (concatenated) or of the newest results file."""
    if not paths:
        files = sorted((common.WORK / "results").glob("*.jsonl"))
        if not files:
            raise SystemExit("no results yet: run `python -m benchmarks.vs_eolearn run` first")
        paths = [files[-1]]
    records = []
    for path in paths:
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return paths, records


def _med(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a and a == a and b == b else "-"


def _fmt(v: float, nd: int = 1) -> str:
    return "-" if v != v else f"{v:.{nd}f}"


def _codec_label(label: str) -> str:
    """Codec labels of earlier records named zarr's default level 3 as eoflow's; it is level 1."""
    return {
        "zstd level 3 (zarr's default; eoflow's)": "zstd level 3 (zarr's default)",
        "zstd level 1": "zstd level 1 (eoflow's)",
    }.get(label, label)


def _stages(run: dict) -> dict[str, float]:
    """A run's seconds per stage; eoflow's recomputed from its task prefixes (current mapping)."""
    prefixes = run.get("inner", {}).get("task_prefix_seconds")
    if run["system"] == "eoflow" and prefixes:
        from benchmarks.vs_eolearn.eoflow_chain import stages_of_prefixes

        return stages_of_prefixes(prefixes)
    return run["stage_seconds"]


def summarise(runs: list[dict]) -> dict[int, dict[str, dict]]:
    """Median of each metric per (size, system) over the repeats."""
    out: dict[int, dict[str, dict]] = {}
    for n in sorted({r["patches"] for r in runs}):
        out[n] = {}
        for system in ("eo-learn", "eoflow", "eo-learn+jemalloc"):
            rs = [r for r in runs if r["patches"] == n and r["system"] == system and r["ok"]]
            if not rs:
                continue
            stage_runs = [_stages(r) for r in rs]
            stages = {st: _med([s.get(st, 0.0) for s in stage_runs]) / n for st in common.STAGES}
            out[n][system] = {
                "runs": len(rs),
                "walls": [round(r["wall_s"], 1) for r in rs],
                "workers": rs[0]["workers"],
                "wall_s": _med([r["wall_s"] for r in rs]),
                "cpu_s": _med([r["cpu_s"] for r in rs]),
                "peak_tree_gib": _med([r["peak_tree_rss"] for r in rs]) / GIB,
                "peak_proc_gib": _med([r["peak_proc_rss"] for r in rs]) / GIB,
                "peak_main_gib": _med([r.get("peak_main_rss") or float("nan") for r in rs]) / GIB,
                "peak_child_gib": _med([r.get("peak_child_rss") or float("nan") for r in rs]) / GIB,
                "output_mb": _med([r["output_bytes"] for r in rs]) / MB,
                "mpx_s_core": _med([r["throughput_px_dates_per_s_per_core"] for r in rs]) / 1e6,
                "stages": stages,
            }
    return out


def _size_table(n: int, s: dict[str, dict]) -> list[str]:
    el, ef = s.get("eo-learn"), s.get("eoflow")
    if not el or not ef:
        return [f"(size {n}: a system failed; see the JSON lines)", ""]
    w = el["workers"]
    rep = f"median of {el['runs']}" if el["runs"] > 1 else "one run"
    lines = [
        f"### {n} patch{'es' if n > 1 else ''}, {w} worker{'s' if w > 1 else ''} ({rep})",
        "",
        "| metric | eo-learn 1.5.7 | eoflow | eoflow / eo-learn |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("wall time (s)", "wall_s", 1),
        ("CPU time, whole tree (s)", "cpu_s", 1),
        ("peak RSS, process tree (GiB)", "peak_tree_gib", 2),
        ("peak RSS, largest process (GiB)", "peak_proc_gib", 2),
        ("peak RSS, main process (GiB)", "peak_main_gib", 2),
        ("peak RSS, largest child process = worker (GiB)", "peak_child_gib", 2),
        ("output (MB)", "output_mb", 1),
        ("throughput (M pixel-dates / s / core)", "mpx_s_core", 3),
    ]
    for label, key, nd in rows:
        lines.append(f"| {label} | {_fmt(el[key], nd)} | {_fmt(ef[key], nd)} | "
                     f"{_ratio(el[key], ef[key])} |")  # fmt: skip
    for st in common.STAGES:
        a, b = el["stages"][st], ef["stages"][st]
        if a == 0 and b == 0:
            continue
        lines.append(f"| stage {st} (worker s / patch) | {a:.2f} | {b:.2f} | {_ratio(a, b)} |")
    if el["runs"] > 1:
        lines.append(f"| wall of each run (s) | {el['walls']} | {ef['walls']} | |")
    lines.append("")
    return lines


def _checks_table(checks: list[dict]) -> list[str]:
    lines = [
        "| patches | inputs equal | NDWI/NDBI equal | VALID_COUNT equal | interpolation max abs diff "
        "(<= 1e-5) | cells NaN in eo-learn only | erosion equal (pixels eroded) | samples per class "
        "equal (totals eo-learn / eoflow) |",
        "|---:|---|---|---|---|---:|---|---|",
    ]
    for c in checks:
        if "error" in c:
            lines.append(f"| {c['patches']} | check failed: {c['error']} | | | | | | |")
            continue
        outs = list(c["outputs"].values())
        imax = max(o["interpolation"]["max_abs_diff"] for o in outs)
        nan_only = sum(
            v["n_nan_eolearn_only"]
            for o in outs
            for v in o["interpolation"]["per_feature"].values()
        )
        ero = all(o["erosion"]["ok"] for o in outs)
        eroded = [o["erosion"]["pixels_eroded_eoflow"] for o in outs]
        tot = c["sample_totals"]
        lines.append(
            f"| {c['patches']} | {_yn(all(v['ok'] for v in c['inputs'].values()))} "
            f"| {_yn(c['indices']['ok'])} | {_yn(all(o['valid_count']['ok'] for o in outs))} "
            f"| {imax:.1e} ({_yn(imax <= 1e-5)}) | {nan_only} | {_yn(ero)} ({eroded}) "
            f"| {_yn(tot['ok'])} ({sum(tot['eolearn'].values())} / {sum(tot['eoflow'].values())}) |"
        )
    for c in checks:
        mm = (c.get("sample_totals") or {}).get("mismatches") or []
        if mm:
            lines.append(
                f"* samples, {c['patches']} patches: "
                + "; ".join(
                    f"{m['patch']} class {m['class']}: eo-learn {m['eolearn']}, eoflow "
                    f"{m['eoflow']} of {m['available']} eroded pixels"
                    for m in mm
                )
                + ". eo-learn takes `round(n * 0.25)` (Python: half to even), eoflow "
                "`floor(n * 0.25 + 0.5)` (half up): they differ when n * 0.25 ends in .5 with an "
                "even integer part."
            )
    lines += [
        "",
        "Checked patches: first and last of each size (sample counts: every patch). 'cells NaN in eo-learn only': eo-learn "
        "returns NaN after a pixel's last valid observation (here every pixel at the last grid "
        "instants, after the last kept acquisition), eoflow holds the last valid value; these "
        "cells are excluded from the max abs diff and counted instead.",
        "",
    ]
    return lines


def _profile_table(p: dict) -> list[str]:
    lines = [
        f"## eoflow ops one by one (patch {p['patch']}, in memory, 1 thread, best of "
        f"{p['repeats']}; `python -m benchmarks.vs_eolearn.profile`)",
        "",
        "| op | first call (s) | best (s) |",
        "|---|---:|---:|",
    ]
    for name, v in p["ops"].items():
        lines.append(f"| {name} | {v['first_s']:.3f} | {v['best_s']:.3f} |")
    lines += [
        "",
        f"Reading the patch from Zarr: {p['read_zarr_s']:.2f} s. Interpolation of one feature "
        f"({p['frames_kept']} kept frames, 250,000 pixels, to 25 instants): eoflow's "
        f"`interpolate_to_grid` takes {p['interp_vs_reference']:.2f}x the time of the reference "
        "kernel (`profile.interp_time_major`: numba, time-major, two streaming passes; max abs "
        f"difference {p['reference_max_abs_diff']:.1e}). The first call of the first numba "
        "kernel in a process pays numba's initialisation (~0.7 s) even with a cache hit.",
        "",
    ]
    if "fused_vs_separate_max_abs_diff" in p:
        lines[-1:-1] = [
            "",
            "`eoflow.ops.fused.interpolate_features` computes NDWI/NDBI, validity and the "
            "interpolation of all features in one pass per chunk (Dask, sync scheduler, "
            "reading the kept frames in place); its NDVI equals the separate path's to "
            f"{p['fused_vs_separate_max_abs_diff']:.1e}.",
        ]
    if p.get("codecs"):
        lines += [
            "Zarr v3 codecs on this data (one chunk per array; read = best of 3; "
            "`profile.codecs`):",
            "",
            "| array | codec | write (s) | read (s) | compression ratio |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {c['array']} ({c['mb']:.0f} MB) | {_codec_label(c['codec'])} | {c['write_s']:.3f} | "
            f"{c['read_s']:.3f} | {c['ratio']:.1f} |"
            for c in p["codecs"]
        ]
        lines.append("")
    return lines


def _yn(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _rel(path: Path) -> str:
    return str(path.relative_to(common.ROOT) if path.is_relative_to(common.ROOT) else path)


def render(paths: list[Path], records: list[dict]) -> str:
    """The markdown of ``RESULTS.md``."""
    contexts = [r for r in records if r.get("record") == "context"]
    ctx = contexts[0] if contexts else {}
    runs = [r for r in records if r.get("record") == "run"]
    checks = [r for r in records if r.get("record") == "checks"]
    summary = summarise(runs)
    m, v = ctx.get("machine", {}), ctx.get("versions", {})
    el_v = v.get("eolearn_venv", {})
    lines = [
        "# eoflow vs eo-learn 1.5.7 on the seed's chain",
        "",
        "Made by `python -m benchmarks.vs_eolearn all` (or `make bench`); see "
        "`benchmarks/vs_eolearn/__main__.py` for `--sizes`/`--repeats`.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GiB "
        f"RAM, {m.get('platform', '?')}; load average at start {m.get('load_avg_at_start')}. "
        f"Run {ctx.get('at', '?')} at commit {ctx.get('git_commit', '?')}. eoflow "
        f"{v.get('eoflow')} (dask {v.get('dask')}, xarray {v.get('xarray')}, zarr {v.get('zarr')}, "
        f"numba {v.get('numba')}, numpy {v.get('numpy')}); eo-learn {el_v.get('eo-learn')} "
        f"(numpy {el_v.get('numpy')}, numba {el_v.get('numba')}, OpenCV "
        f"{el_v.get('opencv-python-headless')}).",
        "",
    ]
    if len(contexts) > 1:
        lines += [
            f"Records from {len(contexts)} runs (same machine and versions): started "
            + ", ".join(f"{c.get('at')} (load {c.get('machine', {}).get('load_avg_at_start')})"
                        for c in contexts)
            + ".",
            "",
        ]  # fmt: skip
    load = m.get("load_avg_at_start") or [0]
    if m.get("cores") and load[0] > 0.5 * m["cores"]:
        lines += [
            f"> **Noisy run**: the load average was {load[0]} on {m['cores']} cores when it "
            "started (other jobs on the machine); absolute times are inflated and ratios are "
            "only indicative. Rerun on a quiet machine for the published table.",
            "",
        ]
    lines += ["## Summary", ""]
    lines += [
        "| patches | workers | wall eo-learn (s) | wall eoflow (s) | throughput eo-learn "
        "(M px-dates/s/core) | throughput eoflow | speed-up | peak RSS tree eo-learn / eoflow (GiB) "
        "| largest process eo-learn / eoflow (GiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for n, s in summary.items():
        el, ef = s.get("eo-learn"), s.get("eoflow")
        if not el or not ef:
            continue
        lines.append(
            f"| {n} | {el['workers']} | {el['wall_s']:.1f} | {ef['wall_s']:.1f} "
            f"| {el['mpx_s_core']:.3f} | {ef['mpx_s_core']:.3f} "
            f"| {ef['mpx_s_core'] / el['mpx_s_core']:.1f}x "
            f"| {el['peak_tree_gib']:.2f} / {ef['peak_tree_gib']:.2f} "
            f"| {el['peak_proc_gib']:.2f} / {ef['peak_proc_gib']:.2f} |"
        )
    jm = {n: s for n, s in summary.items() if s.get("eo-learn+jemalloc") and s.get("eoflow")}
    if jm:
        lines += [
            "",
            "eo-learn with jemalloc preloaded (as eoflow's workers; not how its users run it): "
            "how much of the gap is the allocator.",
            "",
            "| patches | wall eo-learn (s) | wall eo-learn + jemalloc (s) | wall eoflow (s) "
            "| eoflow speed-up over eo-learn + jemalloc | largest process eo-learn + jemalloc (GiB) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, s in jm.items():
            el, ej, ef = s.get("eo-learn"), s["eo-learn+jemalloc"], s["eoflow"]
            lines.append(
                f"| {n} | {el['wall_s'] if el else float('nan'):.1f} | {ej['wall_s']:.1f} "
                f"| {ef['wall_s']:.1f} | {ef['mpx_s_core'] / ej['mpx_s_core']:.1f}x "
                f"| {ej['peak_proc_gib']:.2f} |"
            )
    lines += ["", "## Per size", ""]
    for n, s in summary.items():
        lines += _size_table(n, s)
    lines += ["## Same results?", ""]
    lines += _checks_table(checks) if checks else ["(no checks recorded)", ""]
    profiles = [r for r in records if r.get("record") == "profile"]
    if profiles:
        lines += _profile_table(profiles[-1])
    lines += [NOTES]
    lines += [
        "## Raw records (JSON lines; the first is the context)",
        "",
        f"From {', '.join(f'`{_rel(p)}`' for p in paths)}.",
        "",
        "```jsonl",
    ]
    for r in records:
        slim = {k: val for k, val in r.items() if k not in ("log_tail",)}
        lines.append(json.dumps(slim, default=str))
    lines += ["```", ""]
    return "\n".join(lines)


def report(paths: list[Path] | Path | None = None, out: Path = common.RESULTS_MD) -> Path:
    """Write ``RESULTS.md`` from results files (the newest one by default)."""
    if isinstance(paths, Path):
        paths = [paths]
    paths, records = load(paths)
    out.write_text(render(paths, records))
    print(f"report: {out}", file=sys.stderr)
    return out
