"""Plot a VAE run's curves: pretraining cross-entropy, fine-tuning loss and validation RMSE.

    python -m benchmarks.vae.plot_curves RESULTS_DIR [--out PNG]

``RESULTS_DIR`` holds ``pretrain_metrics.jsonl`` and ``finetune_metrics.jsonl`` (as copied into
``benchmarks/vae/results/*``) or is a run's ``out`` directory (``pretrain/`` and ``finetune/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _records(d: Path, phase: str) -> list[dict]:
    for p in (d / f"{phase}_metrics.jsonl", d / phase / "metrics.jsonl"):
        if p.is_file():
            return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    raise SystemExit(
        f"{d}: no {phase} metrics (expected {phase}_metrics.jsonl or {phase}/metrics.jsonl)"
    )


def _selection(d: Path) -> list[list[dict]]:
    """The ``finetune.refit`` selection members' records (``select-member-k_metrics.jsonl`` or
    ``finetune/select/member-k/metrics.jsonl``), in member order; empty without refit."""
    found = sorted(d.glob("select-member-*_metrics.jsonl")) or sorted(
        d.glob("finetune/select/member-*/metrics.jsonl")
    )
    found.sort(
        key=lambda p: int("".join(ch for ch in p.as_posix().split("member-")[-1] if ch.isdigit()))
    )
    return [[json.loads(x) for x in p.read_text().splitlines() if x.strip()] for p in found]


def _refit(d: Path) -> dict:
    """The ``refit`` record of the fine-tune manifest (``finetune_manifest.json`` or
    ``finetune/manifest.json``): the pooled curve and the step chosen; empty without refit."""
    for p in (d / "finetune_manifest.json", d / "finetune" / "manifest.json"):
        if p.is_file():
            return json.loads(p.read_text())["results"].get("refit") or {}
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, help="PNG path (default RESULTS/curves.png)")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pre, ft = _records(a.results, "pretrain"), _records(a.results, "finetune")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in pre], [r["ce"] for r in pre])
    ax1.set(xlabel="pretraining step", ylabel="cross-entropy per byte", title="Pretraining")
    tr = [r for r in ft if "loss" in r and "mse" in r]
    ax2.plot([r["step"] for r in tr], [r["mse"] for r in tr], color="tab:gray", label="train MSE")
    ax2.set(xlabel="fine-tuning step", ylabel="train MSE (standardised log target)")
    val = [r for r in ft if "val" in r and "loss" not in r]
    sel, refit = _selection(a.results), _refit(a.results)
    if sel and refit:  # finetune.refit: the members' held-out curves, pooled, and the step chosen
        ax3 = ax2.twinx()
        for k, recs in enumerate(sel):
            v = [r for r in recs if "val" in r and "loss" not in r]
            ax3.plot([r["step"] for r in v], [r["val"] for r in v], ".-", lw=0.8, alpha=0.6,
                     label=f"member {k} held-out RMSE")  # fmt: skip
        pooled = sorted((int(st), v) for st, v in refit["curve"].items())  # JSON keys: strings
        ax3.plot(*zip(*pooled, strict=True), "o-", color="tab:red", label="pooled")
        ax3.axvline(refit["step"], color="tab:red", ls=":", lw=1)
        ax3.set_ylabel("held-out RMSE (LFMC %)", color="tab:red")
        ax3.legend(fontsize=7, loc="upper right")
        ax2.set_title("Fine-tuning: refit on all rows (dotted: the step chosen)")
    elif val:
        ax3 = ax2.twinx()
        ax3.plot([r["step"] for r in val], [r["val"] for r in val], "o-", color="tab:red",
                 label="held-out sites RMSE")  # fmt: skip
        best = min(val, key=lambda r: r["val"])
        ax3.axvline(best["step"], color="tab:red", ls=":", lw=1)
        ax3.set_ylabel("held-out RMSE (LFMC %)", color="tab:red")
        ax2.set_title("Fine-tuning (dotted: the step kept)")
    fig.tight_layout()
    out = a.out or a.results / "curves.png"
    fig.savefig(out, dpi=90)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
