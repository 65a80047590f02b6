"""Comparing trials at equal fidelity. ASHA stops most trials at its first rung, so a
trial's last value may come from epoch 1 and another's from epoch 10: comparing those
measures which trials ASHA let run, not which setup is better. These helpers read
epochs.csv (one row per trial and scored epoch, every candidate metric across folds and
per fold) to compare two trials at the deepest epoch both scored, to compute importance
over trials at one epoch, and to say how far a rung's ranking holds to the end.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from nli_tune.study.space import METRICS, fold_column

IMPORTANCE_MIN_TRIALS = 5  # fewer trials than this at an epoch: no importance drawn there


def fold_columns(epochs: pd.DataFrame, metric: str) -> list[str]:
    """epochs.csv's per-fold columns of `metric`, fold order (empty for older searches)."""
    cols = [c for c in epochs if re.fullmatch(fold_column(metric, r"\d+"), c)]
    return sorted(cols, key=lambda c: int(c[4:].split("_", 1)[0]))


def common_epoch(epochs: pd.DataFrame, a: str, b: str) -> int | None:
    """The deepest epoch at which both trials scored, or None."""
    both = set(epochs.loc[epochs["trial_id"] == a, "epoch"])
    both &= set(epochs.loc[epochs["trial_id"] == b, "epoch"])
    return int(max(both)) if both else None


def fold_values_at(epochs: pd.DataFrame, trial: str, epoch: int, metric: str) -> np.ndarray:
    """A trial's per-fold values of `metric` at one scored epoch."""
    row = epochs[(epochs["trial_id"] == trial) & (epochs["epoch"] == epoch)].iloc[-1]
    return row[fold_columns(epochs, metric)].to_numpy(dtype=float)


def values_at_epoch(epochs: pd.DataFrame, epoch: int, metric: str) -> pd.Series:
    """trial_id -> cross-fold `metric` at `epoch`, for the trials that scored it."""
    at = epochs[epochs["epoch"] == epoch].drop_duplicates("trial_id", keep="last")
    return at.set_index("trial_id")[metric].dropna()


def importance_epoch(epochs: pd.DataFrame, metric: str) -> tuple[int, int] | None:
    """(epoch, trials): the deepest epoch at which at least IMPORTANCE_MIN_TRIALS trials
    have a value, else the epoch with the most; None for an empty table."""
    if epochs.empty or metric not in epochs:
        return None
    counts = epochs.dropna(subset=[metric]).groupby("epoch")["trial_id"].nunique()
    if counts.empty:
        return None
    deep = counts[counts >= IMPORTANCE_MIN_TRIALS]
    epoch = int(deep.index.max()) if len(deep) else int(counts.idxmax())
    return epoch, int(counts[epoch])


def rung_rank_correlation(epochs: pd.DataFrame, rungs: list[int]) -> dict:
    """Whether a rung can be trusted, per rung and candidate metric: Spearman's rho between
    the trials' values at the rung and at their last epoch (does the rung rank trials as
    the end does?) and the mean over trials of the fold std at the rung (how noisy one
    value is there), over the trials that ran past the rung. Unbiased only on a search
    that ran every trial to the end (`bench --asha-off`); under ASHA only the survivors
    count. {rung: {metric: {spearman, fold_std, trials}}}."""
    from scipy.stats import spearmanr

    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    out: dict[str, dict] = {}
    for rung in rungs:
        at = epochs[epochs["epoch"] == rung].drop_duplicates("trial_id", keep="last")
        at = at.set_index("trial_id")
        ended = last[last["epoch"] > rung]  # a rung at a trial's last epoch says nothing
        common = at.index.intersection(ended.index)
        out[str(rung)] = {}
        for metric in (m for m in METRICS if m in epochs):
            now, end = at.loc[common, metric], ended.loc[common, metric]
            ok = now.notna() & end.notna()
            rho = spearmanr(now[ok], end[ok]).statistic if ok.sum() >= 3 else float("nan")
            per_fold = at.loc[common, fold_columns(epochs, metric)]
            std = per_fold.std(axis=1, ddof=0).mean() if per_fold.shape[1] else float("nan")
            out[str(rung)][metric] = {
                "spearman": float(rho),
                "fold_std": float(std),
                "trials": int(ok.sum()),
            }
    return out
