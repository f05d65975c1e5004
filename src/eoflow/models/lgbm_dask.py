"""Distributed LightGBM (``lightgbm.dask``) trained from Dask arrays backed by ``samples.zarr``.

Workers read their own chunks from the store (no numpy pushed through the scheduler). Rows are
shuffled with a seeded permutation before chunking so every worker sees every class (multiclass
training can hang when a worker lacks a label). Ports stay random unless configured; the network
timeout is bounded; a lost worker gets one retry, then a :class:`ClusterError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eoflow.errors import ClusterError, ModelError
from eoflow.models.lgbm import LgbmModel

__all__ = ["samples_as_dask", "train_distributed"]


def samples_as_dask(path: Path, rows: np.ndarray, *, n_chunks: int, seed: int):
    """``X`` (rows, time*feature+static) float32 and ``y`` Dask arrays for the given row ids."""
    import dask.array as da

    X = da.from_zarr(str(path), component="X")
    S = da.from_zarr(str(path), component="S")
    y = da.from_zarr(str(path), component="y")
    flat = da.concatenate([X.reshape(X.shape[0], -1), S], axis=1)
    perm = np.random.default_rng(seed).permutation(rows)
    size = max(1, -(-perm.size // n_chunks))
    return flat[perm].rechunk({0: size, 1: -1}), y[perm].rechunk({0: size})


def train_distributed(
    client,
    samples_path: Path,
    train_rows: np.ndarray,
    *,
    feature_names: list[str],
    params: dict,
    n_estimators: int,
    sidecar: dict,
    time_out_min: int = 10,
) -> LgbmModel:
    """Train with ``lightgbm.dask.DaskLGBMClassifier`` on the workers of ``client``."""
    import lightgbm as lgb
    import zarr

    rows = np.flatnonzero(train_rows)
    y_all = zarr.open_group(str(samples_path), mode="r")["y"][:]
    class_ids = sorted(int(c) for c in np.unique(y_all[rows]))
    if len(class_ids) < 2:
        raise ModelError(
            f"training data hold only class {class_ids}", "sample more tiles or classes"
        )
    client.wait_for_workers(1, timeout=120)  # a local cluster's workers start in the background
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    X, y = samples_as_dask(samples_path, rows, n_chunks=n_workers, seed=int(params.get("seed", 0)))
    yi = y.map_blocks(
        lambda b: np.searchsorted(np.asarray(class_ids), b).astype(np.int32), dtype=np.int32
    )
    kw = {k: v for k, v in params.items() if k not in ("num_threads", "deterministic")}
    est = None
    for attempt in (1, 2):
        est = lgb.DaskLGBMClassifier(
            client=client, n_estimators=n_estimators, objective="multiclass", tree_learner="data",
            time_out=time_out_min, verbosity=-1, **kw,
        )  # fmt: skip
        try:
            est.fit(X, yi)
            break
        except Exception as exc:
            if attempt == 2:
                raise ClusterError(
                    f"distributed LightGBM training failed twice: {' '.join(str(exc).split())[:200]}",
                    "check the workers (dashboard) or set model.distributed: false",
                ) from exc
    booster = est.to_local().booster_
    side = {**sidecar, "class_ids": class_ids, "features": feature_names, "n_estimators": n_estimators,
            "params": {**kw, "objective": "multiclass", "tree_learner": "data"},
            "format": "lightgbm-text", "trained_with": "lightgbm.dask",
            "workers": n_workers}  # fmt: skip
    return LgbmModel(booster, class_ids, feature_names, side)
