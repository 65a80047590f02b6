"""Post-grouped splits: a held-out test set first, then K label-stratified CV folds.

Both use scikit-learn's StratifiedGroupKFold over (post, criterion) pairs with
groups = post_id, so no post ever straddles two splits and each split's matched rate
stays close to the overall rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from nli_tune.core.errors import UserError


@dataclass(frozen=True)
class FoldPlan:
    test_posts: tuple[str, ...]  # held out from every search; scored once by `train`
    val_folds: tuple[tuple[str, ...], ...]  # fold k's validation posts; its train = the rest
    seed: int

    @property
    def trainval_posts(self) -> tuple[str, ...]:
        return tuple(p for fold in self.val_folds for p in fold)

    def fold(self, k: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(train posts, validation posts) of fold k."""
        if not 0 <= k < len(self.val_folds):
            raise IndexError(f"fold {k} out of range 0..{len(self.val_folds) - 1}")
        val = self.val_folds[k]
        train = tuple(p for j, f in enumerate(self.val_folds) if j != k for p in f)
        return train, val

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "test": list(self.test_posts),
            "folds": [list(f) for f in self.val_folds],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def split_posts(
    pairs: pd.DataFrame, fraction: float, seed: int, key: str = "fraction"
) -> tuple[list, list]:
    """(kept posts, split-off posts), in data order. The split-off share is one fold of
    round(1/fraction) folds, e.g. 0.15 -> 1 of 7 (~14%): post-grouped and label-stratified
    like the CV. `key` names the setting in the error (test_fraction, calibration_fraction)."""
    n_splits = max(2, round(1 / fraction))
    posts = pairs["post_id"].unique()
    if len(posts) < n_splits:
        raise UserError(f"{key} {fraction}: needs at least {n_splits} posts, data has {len(posts)}")
    _, split_idx = _first_split(pairs, n_splits, seed)
    split = set(pairs["post_id"].iloc[split_idx])
    return [p for p in posts if p not in split], [p for p in posts if p in split]


def split_test(pairs: pd.DataFrame, test_fraction: float, seed: int) -> tuple[list, list]:
    """(non-test posts, test posts): the test posts no search or fit ever sees."""
    return split_posts(pairs, test_fraction, seed, "test_fraction")


def calibration_split(train_pairs: pd.DataFrame, cfg) -> tuple[list, list]:
    """(fitting posts, calibration posts) of a training split, as every scorer uses them:
    with `calibration: holdout` a stratified cfg.calibration_fraction of the posts is held
    out for Platt scaling and the threshold; with `none` nothing is. The model's trainer and
    the baselines both call this on the training pairs in data order, so they calibrate on
    the very same posts."""
    if cfg.calibration not in ("holdout", "per_criterion"):
        return list(dict.fromkeys(train_pairs["post_id"])), []
    return split_posts(
        train_pairs, cfg.calibration_fraction, cfg.split_seed, "calibration_fraction"
    )


def make_folds(pairs: pd.DataFrame, k: int, test_fraction: float, seed: int) -> FoldPlan:
    """Split off test posts, then K stratified, post-grouped validation folds of the rest."""
    if k < 2:
        raise UserError(f"folds {k}: need at least 2 folds")
    trainval, test = split_test(pairs, test_fraction, seed)
    if k > len(trainval):
        raise UserError(f"folds {k}: more folds than the {len(trainval)} non-test posts")
    rest = pairs[pairs["post_id"].isin(set(trainval))].reset_index(drop=True)
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for _, val_idx in sgkf.split(rest, rest["label"], groups=rest["post_id"]):
        val = set(rest["post_id"].iloc[val_idx])
        folds.append(tuple(p for p in trainval if p in val))  # keep data order: deterministic
    return FoldPlan(test_posts=tuple(test), val_folds=tuple(folds), seed=seed)


def _first_split(pairs: pd.DataFrame, n_splits: int, seed: int):
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return next(iter(sgkf.split(pairs, pairs["label"], groups=pairs["post_id"])))
