"""Post-score calibration: Platt scaling plus a macro-F1 decision threshold.

The max (or any aggregate) over a post's units ranks posts well but is not a probability:
a long post has more chances at a high unit score. Platt scaling (a 1-D logistic regression
on the aggregated logit) makes 0.5 mean something, and the threshold with the best macro-F1
is taken on the same held-out *training* posts, never on validation or test posts.

`per_criterion` fits each criterion's own Platt scaling and threshold on those posts, each
shrunk toward the shared fit by its number of positives there (weight n / (n +
PRIOR_POSITIVES)): one scaling and one threshold for all 9 criteria leave a criterion
whose scores run low (often a rare one) never decided matched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from nli_tune.redsm5.load import n_criteria

ENSEMBLE = "fold ensemble"  # a fold ensemble's rule on its members' mean (model/ensemble.py)
PRIOR_POSITIVES = 5.0  # per_criterion: a criterion's fit weighs n / (n + this) against the shared


@dataclass
class Calibration:
    method: str = "none"  # platt (fit on held-out training posts) | none (sigmoid, 0.5) | ENSEMBLE
    a: float = 1.0  # P(matched) = sigmoid(a * logit + b)
    b: float = 0.0
    threshold: float = 0.5  # decide matched where P(matched) >= threshold
    posts: int = 0  # held-out training posts it was fitted on
    # per_criterion: each criterion's {a, b, threshold, positives, weight}, DSM order; the
    # fields above are then the shared fit each one was shrunk toward. None: one rule.
    criteria: list[dict] | None = None

    def _per(self, key: str, n: int) -> np.ndarray | float:
        """A parameter per (post, criterion) of `n` post-major values, or the shared one."""
        if self.criteria is None:
            return getattr(self, key)
        return np.tile([c[key] for c in self.criteria], n // len(self.criteria))

    def prob(self, logits: np.ndarray) -> np.ndarray:
        """P(matched) of (post, criterion) logits: a [P, 9] array or its post-major ravel."""
        z = np.asarray(logits, dtype=float)
        a, b = self._per("a", z.size), self._per("b", z.size)
        if self.criteria is not None:
            a, b = np.reshape(a, z.shape), np.reshape(b, z.shape)
        return 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -60, 60)))

    def cutoffs(self, n: int) -> np.ndarray | float:
        """The decision threshold of each of `n` post-major (post, criterion) pairs."""
        return self._per("threshold", n)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Matched (True) where a pair's calibrated probability reaches its threshold."""
        z = np.asarray(logits, dtype=float)
        cuts = self.cutoffs(z.size)
        return self.prob(z) >= (np.reshape(cuts, z.shape) if np.ndim(cuts) else cuts)

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
        shared = (
            f"Platt scaling (a={self.a:.3f}, b={self.b:.3f}) and threshold {self.threshold:.3f}, "
            f"both fit on {self.posts} held-out training posts"
        )
        if self.criteria is None:
            return shared
        cuts = ", ".join(f"{c['threshold']:.2f}" for c in self.criteria)
        return (
            f"per criterion: each criterion's Platt scaling and threshold (thresholds {cuts}), "
            f"shrunk toward the shared fit ({shared}) by n / (n + {PRIOR_POSITIVES:g}) for n "
            f"positives there"
        )


def fit_calibration(logits: np.ndarray, labels: np.ndarray, how: str = "holdout") -> Calibration:
    """Platt scaling and the best-macro-F1 threshold for (post, criterion) logits in
    post-major order; `how` per_criterion adds each criterion's own, shrunk toward it."""
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels).astype(int)
    posts = len(labels) // n_criteria()
    if len(np.unique(labels)) < 2:  # nothing to fit: keep the raw sigmoid
        return Calibration(posts=posts)
    shared = _platt(logits, labels, posts)
    if how != "per_criterion":
        return shared
    z, y = logits.reshape(-1, n_criteria()), labels.reshape(-1, n_criteria())
    shared.criteria = [_shrunk(z[:, c], y[:, c], shared) for c in range(n_criteria())]
    return shared


def _platt(logits: np.ndarray, labels: np.ndarray, posts: int) -> Calibration:
    platt = LogisticRegression(C=100.0).fit(logits.reshape(-1, 1), labels)
    cal = Calibration("platt", float(platt.coef_[0, 0]), float(platt.intercept_[0]), 0.5, posts)
    cal.threshold = best_threshold(cal.prob(logits), labels)
    return cal


def _shrunk(logits: np.ndarray, labels: np.ndarray, shared: Calibration) -> dict:
    """One criterion's Platt scaling and threshold, weighed n / (n + PRIOR_POSITIVES)
    against the shared fit (a criterion with no positive or no negative there, or whose
    own scores rank its posts backwards, keeps the shared fit)."""
    positives = int(labels.sum())
    own = {"a": shared.a, "b": shared.b, "threshold": shared.threshold}
    weight = 0.0
    if 0 < positives < len(labels):
        fit = _platt(logits, labels, len(labels))
        if fit.a > 0:
            own = {"a": fit.a, "b": fit.b, "threshold": fit.threshold}
            weight = positives / (positives + PRIOR_POSITIVES)
    out = {k: weight * v + (1 - weight) * getattr(shared, k) for k, v in own.items()}
    return out | {"positives": positives, "weight": weight}


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
