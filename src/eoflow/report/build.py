"""Stage ``report``: figures plus ``report.html`` tying them to metrics, manifest and tile status."""

from __future__ import annotations

import html
import json
from pathlib import Path

from eoflow.cube.store import read_ledger
from eoflow.reference.classes import ClassTable
from eoflow.report.figures import make_figures
from eoflow.stages.context import RunContext

__all__ = ["render_html", "run_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.failed{color:#b00020;font-weight:bold}.ok{color:#1b7a1b}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}h2{border-bottom:1px solid #ddd}"""


def _classes(ctx: RunContext) -> ClassTable:
    from eoflow.reference.rasterize import reference_classes

    return reference_classes(ctx.cfg)


def _done(store: Path, tiles) -> list:
    return [t for t in tiles if store.exists() and read_ledger(store, t.tile_id)]


def run_report(ctx: RunContext) -> Path:
    """Write ``figures/*.png`` and ``report.html``."""
    from eoflow.cube.store import write_ledger

    if ctx.up_to_date("report", "report.html"):
        ctx.log("report: up to date, nothing to do")
        return ctx.path("report.html")
    ctx.changed = True
    metrics_path = ctx.path("metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    classes = _classes(ctx)
    tiles = _done(ctx.path("features.zarr"), ctx.tiles)
    figs = make_figures(ctx.out, tiles, classes, metrics, ctx.cfg.features.valid_from)
    manifest_path = ctx.path("manifest.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    path = ctx.path("report.html")
    path.write_text(render_html(ctx, metrics, figs, manifest, classes))
    write_ledger(ctx.path("report"), "all", config_hash=ctx.chash, extra={"stage": "report"})
    ctx.log(f"report: {path}")
    return path


def _metrics_html(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td class=l>{html.escape(k)}</td><td>{metrics[k]:.4f}</td></tr>"
        for k in ("overall_accuracy", "f1_weighted", "f1_macro", "kappa")
    )
    pc = "".join(
        f"<tr><td class=l>{cid} {html.escape(v['name'])}</td><td>{v['precision']:.3f}</td>"
        f"<td>{v['recall']:.3f}</td><td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>"
        for cid, v in metrics["per_class"].items()
    )
    return (
        f"<p>Test tiles: {', '.join(metrics['test_tiles'])} ({metrics['n_test']} sampled pixels); "
        f"train tiles: {', '.join(metrics['train_tiles'])} ({metrics['n_train']} pixels).</p>"
        f"<table><tr><th class=l>metric</th><th>value</th></tr>{rows}</table>"
        "<table><tr><th class=l>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        f"{pc}</table>"
    )


def render_html(
    ctx: RunContext, metrics: dict | None, figs: dict[str, str], manifest: dict, classes: ClassTable
) -> str:
    """The report page (self-contained apart from the PNGs in ``figures/``)."""
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>eoflow report: {html.escape(ctx.cfg.name)}</title>",
             f"<style>{_CSS}</style></head><body><h1>eoflow run <code>{html.escape(ctx.cfg.name)}</code></h1>"]  # fmt: skip
    src = ctx.source_info or manifest.get("inputs", {}).get("source", {})
    if src.get("kind") == "synthetic":
        parts.append("<p class=failed>Input data are SYNTHETIC (generated), not observations.</p>")
    parts.append(f"<p>{len(ctx.tiles)} tile(s), {ctx.cfg.start} to {ctx.cfg.end}, "
                 f"config hash <code>{ctx.chash}</code>, git {html.escape(str(manifest.get('git_revision')))}.</p>")  # fmt: skip
    parts.append("<h2>Accuracy</h2>")
    parts.append(_metrics_html(metrics) if metrics else "<p>No model was trained in this run.</p>")
    captions = {
        "true_colour": "True colour of the clearest date", "ndvi_temporal_mean": "Temporal mean NDVI",
        "reference": "Reference classes, before and after erosion", "valid_count": "Valid observation count",
        "ndvi_over_time": "Mean NDVI per acquisition, with and without cloud masking",
        "confusion_matrix": "Confusion matrix on the test tiles", "feature_importance": "Feature importance",
        "prediction": "Prediction beside the reference",
    }  # fmt: skip
    parts.append("<h2>Figures</h2>")
    for key, name in figs.items():
        parts.append(
            f"<h3>{html.escape(captions.get(key, key))}</h3><img src='figures/{html.escape(name)}'>"
        )
    parts.append(
        "<h2>Tiles</h2><table><tr><th class=l>tile</th><th class=l>status</th><th class=l>stage</th><th class=l>error</th></tr>"
    )
    for t in ctx.tiles:
        st = ctx.status.get(t.tile_id, {})
        state = st.get("state", "not run")
        parts.append(f"<tr><td class=l>{t.tile_id}</td><td class='l {state}'>{state}</td>"
                     f"<td class=l>{st.get('stage', '')}</td><td class=l>{html.escape(st.get('error', ''))}</td></tr>")  # fmt: skip
    repairs_path = ctx.out / "reference_repairs.json"
    repairs = json.loads(repairs_path.read_text()) if repairs_path.exists() else []
    if repairs:
        parts.append(
            "</table><h2>Reference repairs</h2><table><tr><th>feature id</th><th class=l>action</th></tr>"
        )
        parts.extend(
            f"<tr><td>{r['fid']}</td><td class=l>{html.escape(r['action'])}</td></tr>"
            for r in repairs
        )
    parts.append(
        "</table><h2>Classes</h2><table><tr><th>id</th><th class=l>name</th><th class=l>colour</th></tr>"
    )
    for c in classes:
        parts.append(f"<tr><td>{c.id}</td><td class=l>{html.escape(c.name)}</td>"
                     f"<td class=l><span style='background:{c.color}'>&nbsp;&nbsp;&nbsp;&nbsp;</span> {c.color}</td></tr>")  # fmt: skip
    timings = manifest.get("timings_s", ctx.timings)
    parts.append("</table><h2>Manifest</h2><table>")
    parts.extend(
        f"<tr><td class=l>{html.escape(k)}</td><td>{v:.1f} s</td></tr>" for k, v in timings.items()
    )
    parts.append("</table><details><summary>manifest.json</summary><pre>"
                 f"{html.escape(json.dumps(manifest, indent=1, default=str)[:20000])}</pre></details></body></html>")  # fmt: skip
    return "\n".join(parts)
