"""LightGBM multiclass on flattened (time x feature) vectors, saved safely (text model + JSON).

A LightGBM text model that is truncated aborts the whole process when loaded, with no exception
to catch; :func:`load_model` therefore checks the file's structure and loads it in a child process
first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eoflow.errors import ModelError

__all__ = ["LgbmModel", "flatten_samples", "load_model", "train_local", "validate_model_file"]


@dataclass
class LgbmModel:
    """A trained booster plus everything needed to apply it to a features store."""

    booster: object
    class_ids: list[int]
    feature_names: list[str]
    sidecar: dict

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` (columns follow :attr:`class_ids`)."""
        p = self.booster.predict(X)
        return p.reshape(X.shape[0], -1).astype(np.float32)

    def save(self, folder: Path) -> None:
        """Write ``model.txt`` and ``model.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "model.txt"))
        (folder / "model.json").write_text(json.dumps(self.sidecar, indent=2))


def flatten_samples(samples: dict) -> tuple[np.ndarray, list[str]]:
    """``(n, time * feature + static)`` float32 matrix and its column names (time-major)."""
    X, S = samples["X"], samples["S"]
    times, feats = samples["attrs"]["time"], samples["attrs"]["features"]
    names = [f"{f}@{t}" for t in times for f in feats] + list(
        samples["attrs"].get("static_features", [])
    )
    flat = np.concatenate([X.reshape(X.shape[0], -1), S], axis=1).astype(np.float32)
    return flat, names


def train_local(
    X: np.ndarray,
    y: np.ndarray,
    *,
    feature_names: list[str],
    params: dict,
    n_estimators: int,
    sidecar: dict,
) -> LgbmModel:
    """Train a multiclass booster on local arrays (labels are class ids, any integers)."""
    import lightgbm as lgb

    class_ids = sorted(int(c) for c in np.unique(y))
    if len(class_ids) < 2:
        raise ModelError(
            f"training data hold only class {class_ids}", "sample more tiles or classes"
        )
    index = {c: i for i, c in enumerate(class_ids)}
    yi = np.array([index[int(c)] for c in y], dtype=np.int32)
    names = [n.replace(" ", "_") for n in feature_names]
    full = {"objective": "multiclass", "num_class": len(class_ids), "verbosity": -1, **params}
    data = lgb.Dataset(X, label=yi, feature_name=names, free_raw_data=True)
    booster = lgb.train(full, data, num_boost_round=n_estimators)
    side = {**sidecar, "class_ids": class_ids, "features": feature_names, "params": full,
            "n_estimators": n_estimators, "format": "lightgbm-text"}  # fmt: skip
    return LgbmModel(booster, class_ids, feature_names, side)


def validate_model_file(path: Path) -> None:
    """Raise :class:`ModelError` unless ``path`` is a complete LightGBM text model.

    Checks the header and the end-of-trees marker, then loads it in a child process so a
    corrupt file cannot abort the caller.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelError(f"model file {path} is missing or empty", "train a model first")
    data = path.read_bytes()
    if not data.startswith(b"tree\n") or b"end of trees" not in data:
        raise ModelError(f"model file {path} is not a complete LightGBM text model",
                         "retrain or copy the file again")  # fmt: skip
    code = "import lightgbm,sys; b=lightgbm.Booster(model_file=sys.argv[1]); print(b.num_trees())"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise ModelError(f"model file {path} cannot be loaded by LightGBM (exit {proc.returncode})",
                         "retrain or copy the file again")  # fmt: skip


def load_model(folder: Path) -> LgbmModel:
    """Load ``model.txt`` + ``model.json`` from ``folder`` after validating them."""
    import lightgbm as lgb

    folder = Path(folder)
    validate_model_file(folder / "model.txt")
    try:
        sidecar = json.loads((folder / "model.json").read_text())
        class_ids, feats = sidecar["class_ids"], sidecar["features"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model sidecar {folder / 'model.json'} is missing or invalid: {exc}",
                         "keep model.json beside model.txt") from exc  # fmt: skip
    booster = lgb.Booster(model_file=str(folder / "model.txt"))
    return LgbmModel(booster, list(class_ids), list(feats), sidecar)
