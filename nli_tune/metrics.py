"""Pair-classification metrics. macro-F1 over both classes is the selection metric."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    criteria: np.ndarray | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """`scores` are P(matched). Ranking metrics are NaN when only one class is present."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    pred = (scores >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    out = {
        "macro_f1": f1_score(labels, pred, average="macro", labels=[0, 1], zero_division=0),
        "f1_matched": f1_score(labels, pred, pos_label=1, zero_division=0),
        "precision_matched": precision_score(labels, pred, zero_division=0),
        "recall_matched": recall_score(labels, pred, zero_division=0),
        "accuracy": accuracy_score(labels, pred),
        "roc_auc": roc_auc_score(labels, scores) if both else float("nan"),
        "pr_auc": average_precision_score(labels, scores) if both else float("nan"),
    }
    if criteria is not None:
        crit = np.asarray(criteria)
        for key in dict.fromkeys(crit):
            sel = crit == key
            out[f"f1_{key}"] = f1_score(labels[sel], pred[sel], zero_division=0)
    return {k: float(v) for k, v in out.items()}
