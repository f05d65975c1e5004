"""Accuracy assessment: overall accuracy, F1, kappa, per-class scores, confusion matrices."""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics"]


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, *, class_ids: list[int], class_names: dict[int, str]
) -> dict:
    """All the numbers of ``metrics.json`` for one test set (labels are class ids)."""
    from sklearn import metrics as m

    labels = sorted(set(int(c) for c in class_ids) | set(int(c) for c in np.unique(y_true)))
    cm = m.confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    p, r, f, s = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        str(c): {"name": class_names.get(c, f"class {c}"), "precision": float(p[i]), "recall": float(r[i]),
                 "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(labels)
    }  # fmt: skip
    return {
        "n_test": len(y_true),
        "overall_accuracy": float(m.accuracy_score(y_true, y_pred)),
        "f1_weighted": float(
            m.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "f1_macro": float(
            m.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "kappa": float(m.cohen_kappa_score(y_true, y_pred, labels=labels)),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": labels,
            "counts": cm.tolist(),
            "row_normalised": cm_norm.round(4).tolist(),
        },
    }
