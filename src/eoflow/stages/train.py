"""Stage ``train``: split tiles, train LightGBM, validate on the test tiles -> ``model/``, ``metrics.json``."""

from __future__ import annotations

import json

import numpy as np

from eoflow import __version__
from eoflow.errors import ConfigError, DataError
from eoflow.metrics import classification_metrics
from eoflow.models.lgbm import LgbmModel, flatten_samples, train_local
from eoflow.stages.context import RunContext
from eoflow.stages.sample import open_samples

__all__ = ["run_train", "split_tiles"]


def split_tiles(
    tile_ids: list[str], *, test_tiles: list[str] | None, fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Train and test tile ids: named test tiles, or a seeded fraction (at least one each)."""
    if test_tiles:
        unknown = sorted(set(test_tiles) - set(tile_ids))
        if unknown:
            raise ConfigError(f"split.test_tiles {unknown} are not tiles with samples",
                              f"tiles with samples: {tile_ids}")  # fmt: skip
        test = sorted(test_tiles)
    else:
        if len(tile_ids) < 2:
            raise DataError(f"only {len(tile_ids)} tile has samples; a split by tile needs 2",
                            "use a larger AOI or a smaller grid.tile_size_px")  # fmt: skip
        rng = np.random.default_rng(seed)
        order = rng.permutation(sorted(tile_ids))
        n = min(len(tile_ids) - 1, max(1, round(fraction * len(tile_ids))))
        test = sorted(order[:n].tolist())
    train = sorted(t for t in tile_ids if t not in test)
    if not train:
        raise ConfigError("split.test_tiles leaves no tile for training", "name fewer test tiles")
    return train, test


def _importance(model: LgbmModel) -> dict[str, float]:
    gain = model.booster.feature_importance(importance_type="gain")
    total = float(gain.sum()) or 1.0
    return {n: float(g) / total for n, g in zip(model.feature_names, gain)}


def run_train(ctx: RunContext) -> dict:
    """Train on the train tiles' samples, score the test tiles' samples, save model + metrics."""
    from eoflow.cube.store import write_ledger

    if ctx.up_to_date("model", "metrics.json"):
        ctx.log("train: model and metrics already written for this config, nothing to do")
        return json.loads(ctx.path("metrics.json").read_text())
    ctx.changed = True
    samples = open_samples(ctx.path("samples.zarr"))
    tiles = samples["attrs"]["tiles"]
    present = sorted({tiles[i] for i in np.unique(samples["tile"])})
    s = ctx.cfg.split
    train_t, test_t = split_tiles(
        present, test_tiles=s.test_tiles, fraction=s.test_fraction, seed=s.seed
    )
    tile_of = np.array(tiles)[samples["tile"]]
    is_test = np.isin(tile_of, test_t)
    X, names = flatten_samples(samples)
    y = samples["y"]
    m = ctx.cfg.model
    params = {"learning_rate": m.learning_rate, "num_leaves": m.num_leaves,
              "min_child_samples": m.min_child_samples, "seed": m.seed, "deterministic": True,
              "num_threads": 1 if m.distributed else 0}  # fmt: skip
    sidecar = {
        "eoflow_version": __version__, "classes": samples["attrs"]["classes"],
        "time": samples["attrs"]["time"], "time_features": samples["attrs"]["features"],
        "static_features": samples["attrs"].get("static_features", []),
        "train_tiles": train_t, "test_tiles": test_t,
    }  # fmt: skip
    if m.distributed:
        from eoflow.models.lgbm_dask import train_distributed

        model = train_distributed(ctx.client, ctx.path("samples.zarr"), ~is_test, feature_names=names,
                                  params=params, n_estimators=m.n_estimators, sidecar=sidecar)  # fmt: skip
    else:
        model = train_local(X[~is_test], y[~is_test], feature_names=names, params=params,
                            n_estimators=m.n_estimators, sidecar=sidecar)  # fmt: skip
    model.save(ctx.path("model"))
    proba = model.predict_proba(X[is_test])
    pred = np.asarray(model.class_ids)[proba.argmax(axis=1)]
    names_by_id = {int(c["id"]): c["name"] for c in samples["attrs"]["classes"]}
    metrics = classification_metrics(
        y[is_test], pred, class_ids=model.class_ids, class_names=names_by_id
    )
    if metrics["n_test"] == 0:
        raise DataError(f"test tiles {test_t} hold no samples", "name other split.test_tiles")
    ids, counts = np.unique(y, return_counts=True)
    metrics.update(
        train_tiles=train_t, test_tiles=test_t, n_train=int((~is_test).sum()),
        class_balance={str(int(i)): int(c) for i, c in zip(ids, counts)},
        feature_importance=_importance(model), distributed=m.distributed,
    )  # fmt: skip
    ctx.path("metrics.json").write_text(json.dumps(metrics, indent=2))
    write_ledger(ctx.path("model"), "all", config_hash=ctx.chash, extra={"stage": "train"})
    ctx.log(f"train: test OA {metrics['overall_accuracy']:.3f}, F1w {metrics['f1_weighted']:.3f}, "
            f"kappa {metrics['kappa']:.3f} on {metrics['n_test']} px of tiles {test_t}")  # fmt: skip
    return metrics
