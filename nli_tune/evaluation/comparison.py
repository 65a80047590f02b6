"""A model's test scores beside the baselines on the same posts, with paired intervals:
what `train` and the search's fold ensemble both report on the held-out test posts."""

from __future__ import annotations

import numpy as np

from nli_tune.evaluation.baselines import calibrated_tfidf, majority_baseline
from nli_tune.evaluation.metrics import bootstrap_macro_f1, interval, pair_metrics, post_metrics


def test_comparison(cfg, test_data, scored, calibration, texts, train_frame) -> dict:
    """The test metrics of `scored` (PostScores of `test_data` under `calibration`), the
    majority class and TF-IDF rows, and the model's differences from them. TF-IDF is
    fitted and calibrated on `train_frame` (the training posts' pairs, in data order) by
    the model's rule, so it is decided on the same calibration posts as the model."""
    test_pairs = test_data.pairs_frame()  # the order every test array below follows
    test = post_metrics(test_data, scored, calibration)
    decisions = calibration.decide(scored.logits).ravel()
    tfidf = calibrated_tfidf(texts, train_frame, test_pairs, cfg)
    tfidf_cutoffs = tfidf.calibration.cutoffs(len(test_pairs))
    baselines = {
        "majority": majority_baseline(train_frame, test_pairs),
        "tfidf_logreg": pair_metrics(test_pairs, tfidf.probs, tfidf_cutoffs)
        | {"calibration": tfidf.calibration.to_dict() | {"how": tfidf.calibration.describe()}},
    }
    # The test split is small (a few hundred pairs): the bootstrap resamples posts, and
    # every row sees the same resamples, so the differences are paired.
    labels = test_data.post_labels.ravel()
    boot = bootstrap_macro_f1(
        labels,
        {
            "model": decisions,
            "tfidf_logreg": tfidf.probs >= tfidf_cutoffs,
            "majority": np.full(len(labels), int(train_frame["label"].mean() >= 0.5)),
        },
        test_pairs["post_id"].to_numpy(),
        seed=cfg.split_seed,  # the same resamples whatever the training seed
    )
    test["macro_f1_ci95"] = interval(boot["model"])
    versus = {}
    for name, row in baselines.items():
        row["macro_f1_ci95"] = interval(boot[name])
        versus[name] = {
            "macro_f1_difference": test["macro_f1"] - row["macro_f1"],
            "ci95": interval(boot["model"] - boot[name]),
        }
    return {
        "test": test,
        "baselines": baselines,
        "model_minus_tfidf": versus["tfidf_logreg"],
        "model_minus_majority": versus["majority"],
        "tfidf_posts": {
            "calibration": sorted(map(str, tfidf.calib_posts)),
            "fitting": sorted(map(str, tfidf.fit_posts)),
        },
    }
