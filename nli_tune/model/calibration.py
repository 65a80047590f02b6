"""Post-score calibration: Platt scaling plus a macro-F1 decision threshold.

The max (or any aggregate) over a post's units ranks posts well but is not a probability:
a long post has more chances at a high unit score. Platt scaling (a 1-D logistic regression
on the aggregated logit) makes 0.5 mean something, and the threshold with the best macro-F1
is taken on the same held-out *training* posts, never on validation or test posts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from nli_tune.redsm5.load import n_criteria

ENSEMBLE = "fold ensemble"  # a fold ensemble's rule on its members' mean (model/ensemble.py)


@dataclass
class Calibration:
    method: str = "none"  # platt (fit on held-out training posts) | none (sigmoid, 0.5) | ENSEMBLE
    a: float = 1.0  # P(matched) = sigmoid(a * logit + b)
    b: float = 0.0
    threshold: float = 0.5  # decide matched where P(matched) >= threshold
    posts: int = 0  # held-out training posts it was fitted on

    def prob(self, logits: np.ndarray) -> np.ndarray:
        z = np.clip(self.a * np.asarray(logits, dtype=float) + self.b, -60, 60)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.method == "none":
            return "none (sigmoid of the aggregated logit, threshold 0.5)"
        if self.method == ENSEMBLE:
            return (
                f"the mean of the fold models' calibrated probabilities, threshold "
                f"{self.threshold:.3f} (the mean of theirs)"
            )
        return (
            f"Platt scaling (a={self.a:.3f}, b={self.b:.3f}) and threshold {self.threshold:.3f}, "
            f"both fit on {self.posts} held-out training posts"
        )


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Platt scaling and the best-macro-F1 threshold for (post, criterion) logits."""
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels).astype(int)
    posts = len(labels) // n_criteria()
    if len(np.unique(labels)) < 2:  # nothing to fit: keep the raw sigmoid
        return Calibration(posts=posts)
    platt = LogisticRegression(C=100.0).fit(logits.reshape(-1, 1), labels)
    cal = Calibration("platt", float(platt.coef_[0, 0]), float(platt.intercept_[0]), 0.5, posts)
    cal.threshold = best_threshold(cal.prob(logits), labels)
    return cal


def best_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the highest macro-F1 (over both classes) on these scores: the
    midpoint between the lowest score called matched and the next lower score."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order]
    pos, n = y.sum(), len(y)
    tp = np.cumsum(y)  # calling the first i + 1 scores matched
    fp = np.arange(1, n + 1) - tp
    fn, tn = pos - tp, (n - pos) - fp
    f1_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    f1_neg = 2 * tn / np.maximum(2 * tn + fn + fp, 1)
    macro = (f1_pos + f1_neg) / 2
    distinct = np.append(p[1:] != p[:-1], True)  # a cut only between different scores
    macro = np.where(distinct, macro, -1)
    i = int(np.argmax(macro))
    below = p[i + 1] if i + 1 < n else 0.0
    return float((p[i] + below) / 2)
