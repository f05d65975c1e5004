"""The run's figures (PNG), as in eo-learn's Slovenia LULC example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from eoflow.geo.tiles import Tile
from eoflow.reference.classes import ClassTable
from eoflow.report.mosaic import mosaic

__all__ = ["make_figures"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _legend(ax, classes: ClassTable, present) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c.color, label=f"{c.id} {c.name}") for c in classes if c.id in present]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8,
              frameon=False, ncol=3)  # fmt: skip


def _class_map(ax, arr, extent, classes: ClassTable, title: str) -> None:
    cmap, norm = classes.mpl_cmap_norm()
    ax.imshow(arr, extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def fig_reference(fstore, tiles, classes, out: Path) -> str:
    plt = _plt()
    lulc, ext = mosaic(fstore, tiles, "LULC", fill=0)
    eroded, _ = mosaic(fstore, tiles, "LULC_ERODED", fill=0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    _class_map(axes[0], lulc, ext, classes, "Reference (rasterised)")
    _class_map(axes[1], eroded, ext, classes, "Reference after erosion (training labels)")
    _legend(axes[1], classes, set(np.unique(lulc).tolist()))
    return _save(fig, out / "reference.png")


def fig_valid_count(fstore, tiles, out: Path) -> str:
    plt = _plt()
    vc, ext = mosaic(fstore, tiles, "VALID_COUNT", fill=0)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(vc, extent=ext, cmap="viridis")
    fig.colorbar(im, ax=ax, label="valid observations")
    ax.set_title("Valid observation count")
    ax.set_axis_off()
    return _save(fig, out / "valid_count.png")


def fig_ndvi_maps(fstore, cstore, tiles, out: Path) -> list[str]:
    plt = _plt()
    names = []
    mean, ext = mosaic(fstore, tiles, "NDVI", reduce=lambda d: d.mean("time"))
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(mean, extent=ext, cmap="RdYlGn", vmin=-0.2, vmax=0.9)
    fig.colorbar(im, ax=ax, label="NDVI")
    ax.set_title("Temporal mean NDVI (interpolated, cloud-masked)")
    ax.set_axis_off()
    names.append(_save(fig, out / "ndvi_temporal_mean.png"))
    cube = xr.open_zarr(cstore, group=tiles[0].tile_id, consolidated=False)
    rgb = [b for b in ("B04", "B03", "B02") if b in cube]
    if len(rgb) == 3:
        names.append(_true_colour(cstore, tiles, out))
    return names


def _true_colour(cstore, tiles, out: Path) -> str:
    plt = _plt()
    cube = xr.open_zarr(cstore, group=tiles[0].tile_id, consolidated=False)
    ok = cube["B04"].notnull().mean(("y", "x")).values
    t = int(np.argmax(ok))
    chans = [
        mosaic(cstore, tiles, b, reduce=lambda d, t=t: d.isel(time=t))[0]
        for b in ("B04", "B03", "B02")
    ]
    img = np.clip(np.dstack(chans) * 3.5, 0, 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(np.nan_to_num(img))
    ax.set_title(f"True colour {str(cube['time'].values[t])[:10]} (black: masked in the source)")
    ax.set_axis_off()
    return _save(fig, out / "true_colour.png")


def fig_ndvi_series(cstore, tiles, valid_from: str, out: Path) -> str:
    """Spatial mean NDVI per acquisition, all pixels vs cloud-masked pixels."""
    import dask

    from eoflow.ops.masks import valid_mask

    plt = _plt()
    sums = []
    for tile in tiles:
        ds = xr.open_zarr(cstore, group=tile.tile_id, consolidated=False)
        if "NDVI" not in ds:
            from eoflow.ops.indices import add_indices

            ds, _ = add_indices(ds, ["NDVI"])
        if "NDVI" not in ds:
            continue
        valid = valid_mask(ds, how=valid_from)
        nd = ds["NDVI"]
        sums.append((nd.sum(("y", "x")), nd.notnull().sum(("y", "x")),
                     nd.where(valid).sum(("y", "x")), (valid & nd.notnull()).sum(("y", "x"))))  # fmt: skip
    if not sums:
        return ""
    computed = dask.compute(*sums)
    times = xr.open_zarr(cstore, group=tiles[0].tile_id, consolidated=False)["time"].values
    tot = [sum(np.asarray(c[i]) for c in computed) for i in range(4)]
    with np.errstate(invalid="ignore", divide="ignore"):
        raw, masked = tot[0] / tot[1], tot[2] / tot[3]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(times, raw, "o-", color="0.6", label="all pixels")
    ax.plot(times, masked, "o-", color="tab:green", label="cloud-masked")
    ax.set_ylabel("mean NDVI")
    ax.set_title("Mean NDVI over time, with and without cloud masking")
    ax.legend()
    fig.autofmt_xdate()
    return _save(fig, out / "ndvi_over_time.png")


def fig_confusion(metrics: dict, classes: ClassTable, out: Path) -> str:
    plt = _plt()
    cm = metrics["confusion_matrix"]
    labels = [classes.name_of(i) for i in cm["labels"]]
    norm = np.asarray(cm["row_normalised"])
    counts = np.asarray(cm["counts"])
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 3, 1.0 * len(labels) + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"Confusion matrix (test tiles), OA {metrics['overall_accuracy']:.3f}")
    return _save(fig, out / "confusion_matrix.png")


def fig_importance(metrics: dict, out: Path) -> str:
    plt = _plt()
    imp = sorted(metrics["feature_importance"].items(), key=lambda kv: kv[1], reverse=True)[:25]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(imp) + 1))
    ax.barh([k for k, _ in imp][::-1], [v for _, v in imp][::-1], color="tab:blue")
    ax.set_xlabel("share of total gain")
    ax.set_title("LightGBM feature importance (top 25)")
    return _save(fig, out / "feature_importance.png")


def fig_prediction(pstore, fstore, tiles, classes, out: Path) -> str:
    plt = _plt()
    pred, ext = mosaic(pstore, tiles, "CLASS", fill=0)
    ref, _ = mosaic(fstore, tiles, "LULC", fill=0)
    prob, _ = mosaic(pstore, tiles, "MAX_PROB")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    _class_map(axes[0], ref, ext, classes, "Reference")
    _class_map(axes[1], pred, ext, classes, "Prediction")
    im = axes[2].imshow(prob, extent=ext, cmap="magma", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[2], label="max class probability")
    axes[2].set_title("Prediction confidence")
    axes[2].set_axis_off()
    _legend(axes[1], classes, set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()))
    return _save(fig, out / "prediction_vs_reference.png")


def make_figures(
    run: Path, tiles: list[Tile], classes: ClassTable, metrics: dict | None, valid_from: str
) -> dict[str, str]:
    """Write every figure that the run's outputs allow; return ``{key: file name}``."""
    out = run / "figures"
    out.mkdir(exist_ok=True)
    fstore, cstore, pstore = run / "features.zarr", run / "cube.zarr", run / "prediction.zarr"
    figs: dict[str, str] = {}
    if tiles and fstore.exists():
        figs["reference"] = fig_reference(fstore, tiles, classes, out)
        figs["valid_count"] = fig_valid_count(fstore, tiles, out)
        for name in fig_ndvi_maps(fstore, cstore, tiles, out):
            figs[name.removesuffix(".png")] = name
    if tiles and cstore.exists():
        name = fig_ndvi_series(cstore, tiles, valid_from, out)
        if name:
            figs["ndvi_over_time"] = name
    if metrics:
        figs["confusion_matrix"] = fig_confusion(metrics, classes, out)
        figs["feature_importance"] = fig_importance(metrics, out)
    if tiles and pstore.exists():
        figs["prediction"] = fig_prediction(pstore, fstore, tiles, classes, out)
    return figs
