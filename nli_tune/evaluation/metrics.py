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

from nli_tune.redsm5.load import criterion_keys, n_criteria


def classification_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    criteria: np.ndarray | None = None,
    threshold: float | np.ndarray = 0.5,
) -> dict[str, float]:
    """`scores` are P(matched), decided at `threshold` (one, or one per pair). Ranking
    metrics are NaN when only one class is present. With `criteria`: each criterion's F1
    of the matched class and their mean, `criterion_macro_f1` (the ReDSM5 authors' macro-F1
    over the symptom labels, here over the 9 criteria)."""
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
        per = {}
        for key in dict.fromkeys(crit):
            sel = crit == key
            per[f"f1_{key}"] = f1_score(labels[sel], pred[sel], zero_division=0)
        out |= per | {"criterion_macro_f1": np.mean(list(per.values()))}
    return {k: float(v) for k, v in out.items()}


def pair_metrics(frame, probs: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict:
    """Metrics of P(matched) scores for a (post, criterion) pair frame in post x 9 order
    (as `ReDSM5.pairs()` gives it): the classification metrics at `threshold` (one, or one
    per pair: `Calibration.cutoffs`) plus the within-criterion ROC-AUC, so every row of a
    comparison reports the same numbers."""
    labels = frame["label"].to_numpy()
    out = classification_metrics(labels, probs, frame["criterion"].to_numpy(), threshold)
    c = n_criteria()
    out["roc_auc_within"] = roc_auc_within(labels.reshape(-1, c), np.reshape(probs, (-1, c)))
    return out | _thresholds(threshold)


def _thresholds(threshold: float | np.ndarray) -> dict:
    """`threshold` (per-criterion cut-offs: their mean) and, where they differ by
    criterion, `thresholds` (DSM order)."""
    cuts = np.atleast_1d(np.asarray(threshold, dtype=float))
    if cuts.size == 1:
        return {"threshold": float(cuts[0])}
    per = cuts[: n_criteria()]
    return {"threshold": float(per.mean()), "thresholds": [round(float(t), 4) for t in per]}


def bootstrap_macro_f1(
    labels: np.ndarray,
    predictions: dict[str, np.ndarray],
    groups: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Macro-F1 of each 0/1 prediction vector over `n_boot` resamples of the groups (posts).

    Posts, not pairs, are resampled: a post's 9 pairs share one text, so they are not
    independent. Every prediction vector sees the same resamples, which makes differences
    between them paired. Returns {name: array of n_boot macro-F1 values}.
    """
    labels = np.asarray(labels).astype(int)
    _, post = np.unique(np.asarray(groups), return_inverse=True)
    n_posts = post.max() + 1
    rng = np.random.default_rng(seed)
    # How often each post is drawn in each resample: [n_boot, n_posts].
    weights = rng.multinomial(n_posts, np.full(n_posts, 1 / n_posts), size=n_boot)
    out = {}
    for name, pred in predictions.items():
        pred = np.asarray(pred).astype(int)
        # Per-post confusion counts; a resample's counts are their weighted sum.
        cells = [(labels == 1) & (pred == 1), (labels == 0) & (pred == 1)]
        cells += [(labels == 1) & (pred == 0), (labels == 0) & (pred == 0)]
        per_post = np.stack([np.bincount(post, c, minlength=n_posts) for c in cells], 1)
        tp, fp, fn, tn = (weights @ per_post).T
        out[name] = (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of bootstrap samples, rounded for reports."""
    tail = (1 - level) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(samples, [tail, 100 - tail])]


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def post_metrics(data, scores, calibration) -> dict[str, float]:
    """(post, criterion) metrics of a UnitData's PostScores under a Calibration: the
    classification metrics at the calibrated threshold, ROC-AUC within each criterion
    (does it tell which posts show *this* criterion), and evidence hit@1."""
    labels = data.post_labels
    probs = calibration.prob(scores.logits)
    crits = np.tile(np.array(criterion_keys(), dtype=object), len(labels))
    cutoffs = calibration.cutoffs(labels.size)
    out = classification_metrics(labels.ravel(), probs.ravel(), crits, cutoffs)
    out["roc_auc_within"] = roc_auc_within(labels, scores.logits)  # the model's own ranking
    out["evidence_hit_at_1"] = evidence_hit_at_1(data, scores.top_unit)
    return out | _thresholds(cutoffs)


def roc_auc_within(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over criteria of the ROC-AUC among posts ([P, 9] arrays): whether a model tells
    which posts show *this* criterion, not only which posts are symptomatic at all."""
    within = [
        roc_auc_score(labels[:, c], scores[:, c])
        for c in range(labels.shape[1])
        if len(np.unique(labels[:, c])) == 2
    ]
    return float(np.mean(within)) if within else float("nan")


def evidence_hit_at_1(data, top_unit: np.ndarray) -> float:
    """Share of matched (post, criterion) pairs whose top unit overlaps an annotated evidence
    sentence, over the pairs whose evidence could be located. NaN for whole-post units (the
    one unit always "overlaps") or when no evidence was located."""
    if data.unit == "post":
        return float("nan")
    located = np.zeros(data.post_labels.shape, bool)
    np.logical_or.at(located, data.post_index, data.annotated)
    rows = (data.post_labels == 1) & located
    if not rows.any():
        return float("nan")
    cols = np.broadcast_to(np.arange(data.post_labels.shape[1]), rows.shape)
    hits = data.annotated[top_unit[rows], cols[rows]]
    return float(hits.mean())


def corrected_ttest(a: np.ndarray, b: np.ndarray, test_train_ratio: float) -> dict[str, float]:
    """Nadeau and Bengio's corrected resampled t-test on paired per-fold scores a - b.

    CV folds share most of their training posts, so the fold differences are correlated and
    the plain paired t-test is over-confident; the correction inflates the variance of the
    mean difference from s^2 / K to (1 / K + n_test / n_train) s^2. With K post-grouped
    folds, n_test / n_train = 1 / (K - 1). Returns the mean difference, its 95% interval,
    t, the degrees of freedom (K - 1) and the two-sided p-value (NaN where every fold
    difference is equal: nothing to test).
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    k = len(d)
    if k < 2:
        raise ValueError(f"corrected t-test needs >= 2 folds, got {k}")
    mean, var = float(d.mean()), float(d.var(ddof=1))
    se = float(np.sqrt((1 / k + test_train_ratio) * var))
    df = k - 1
    if se == 0:
        nan = float("nan")
        return {"difference": mean, "ci_low": mean, "ci_high": mean, "t": nan, "df": df, "p": nan}
    t = mean / se
    half = float(stats.t.ppf(0.975, df)) * se
    return {
        "difference": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "t": float(t),
        "df": df,
        "p": float(2 * stats.t.sf(abs(t), df)),
    }
