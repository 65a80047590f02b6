"""Reference scores on the same split: what the encoder must beat to be worth it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from nli_tune.evaluation.metrics import pair_metrics
from nli_tune.model.calibration import Calibration, fit_calibration
from nli_tune.redsm5.folds import calibration_split


def majority_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Predict the training split's majority class for every test pair (`test` in post x 9
    order); its ranking metrics are those of a constant: ROC-AUC 0.5."""
    majority = int(train["label"].mean() >= 0.5)
    scores = np.full(len(test), float(majority))
    return pair_metrics(test, scores)


def tfidf_scores(
    texts: dict[str, str], train: pd.DataFrame, test: pd.DataFrame, seed: int = 0
) -> np.ndarray:
    """P(matched) per test pair, in test's row order: TF-IDF (word 1-2 grams) of the post
    and one balanced logistic regression per criterion."""
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_posts = list(dict.fromkeys(train["post_id"]))
    vec.fit([texts[p] for p in train_posts])
    scores = np.zeros(len(test))
    for crit, test_part in test.groupby("criterion", sort=False):
        tr = train[train["criterion"] == crit]
        y = tr["label"].to_numpy()
        x_test = vec.transform([texts[p] for p in test_part["post_id"]])
        if len(np.unique(y)) < 2:
            scores[test.index.get_indexer(test_part.index)] = float(y[0]) if len(y) else 0.0
            continue
        clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
        clf.fit(vec.transform([texts[p] for p in tr["post_id"]]), y)
        scores[test.index.get_indexer(test_part.index)] = clf.predict_proba(x_test)[:, 1]
    return scores


@dataclass
class CalibratedBaseline:
    probs: np.ndarray  # calibrated P(matched) per test pair, in the test frame's order
    calibration: Calibration  # decide matched where probs >= calibration.cutoffs(pairs)
    fit_posts: list  # posts the classifier was fitted on
    calib_posts: list  # posts Platt scaling and the threshold were fitted on


def calibrated_tfidf(
    texts: dict[str, str], train: pd.DataFrame, test: pd.DataFrame, cfg
) -> CalibratedBaseline:
    """TF-IDF decided by the model's rule, so macro-F1 compares like with like: fitted on
    the same fitting posts, then Platt scaling and the macro-F1 threshold (`fit_calibration`)
    on the same held-out calibration posts (`calibration_split`) as the model's trainer.
    `train` and `test` are (post, criterion) pair frames, `train` in data order."""
    fit_posts, calib_posts = calibration_split(train, cfg)
    fit = train[train["post_id"].isin(set(fit_posts))].reset_index(drop=True)
    calib = train[train["post_id"].isin(set(calib_posts))].reset_index(drop=True)
    # One fit scores both the calibration and the test pairs.
    both = pd.concat([calib, test], ignore_index=True)
    raw = tfidf_scores(texts, fit, both, cfg.split_seed)
    calibration = Calibration()  # `calibration: none`: 0.5 on the raw probability
    if len(calib):
        labels = calib["label"].to_numpy()
        calibration = fit_calibration(logit(raw[: len(calib)]), labels, cfg.calibration)
    probs = calibration.prob(logit(raw[len(calib) :]))
    return CalibratedBaseline(probs, calibration, list(fit_posts), list(calib_posts))


def logit(p: np.ndarray) -> np.ndarray:
    """The logistic regression's own score back from its probability (clipped: a criterion
    with one class in training gives a hard 0 or 1)."""
    p = np.clip(np.asarray(p, dtype=float), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


MAJORITY, TFIDF = "majority class", "TF-IDF + logistic regression"  # the reference rows


def posts_frame(pairs: pd.DataFrame, posts) -> pd.DataFrame:
    """The pairs of `posts`, in data order (as UnitData.subset keeps them): the calibration
    split of a training frame depends on that order."""
    return pairs[pairs["post_id"].isin(set(posts))].reset_index(drop=True)


def baseline_metrics(
    name: str, texts: dict[str, str], train: pd.DataFrame, test: pd.DataFrame, cfg
) -> dict:
    """One reference row's pair metrics on `test`, fitted (and, for TF-IDF, calibrated by
    the model's rule) on `train`; `calib_posts`: the posts its threshold was fitted on."""
    if name == MAJORITY:
        return majority_baseline(train, test) | {"calib_posts": []}
    if name != TFIDF:
        raise ValueError(f"unknown baseline {name!r}")
    tfidf = calibrated_tfidf(texts, train, test, cfg)
    metrics = pair_metrics(test, tfidf.probs, tfidf.calibration.cutoffs(len(test)))
    return metrics | {"calib_posts": list(tfidf.calib_posts)}
