import numpy as np
import pytest
from sklearn.metrics import f1_score

from nli_tune.evaluation.metrics import bootstrap_macro_f1, corrected_ttest, interval


def _pairs(n_posts: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_posts), 9)
    labels = (rng.random(len(groups)) < 0.1).astype(int)
    noisy = np.where(rng.random(len(groups)) < 0.15, 1 - labels, labels)
    return labels, noisy, groups


def test_each_resample_equals_sklearn_on_the_drawn_posts():
    labels, pred, groups = _pairs(30)
    samples = bootstrap_macro_f1(labels, {"m": pred}, groups, n_boot=5, seed=4)["m"]
    rng = np.random.default_rng(4)
    weights = rng.multinomial(30, np.full(30, 1 / 30), size=5)
    for b in range(5):
        rows = np.concatenate(
            [np.flatnonzero(groups == p).repeat(k) for p, k in enumerate(weights[b]) if k]
        )
        rows = np.sort(rows)
        expected = f1_score(
            labels[rows], pred[rows], average="macro", labels=[0, 1], zero_division=0
        )
        assert abs(samples[b] - expected) < 1e-12


def test_interval_brackets_the_estimate_and_narrows_with_more_posts():
    labels, pred, groups = _pairs(25)
    point = f1_score(labels, pred, average="macro")
    lo, hi = interval(bootstrap_macro_f1(labels, {"m": pred}, groups, seed=1)["m"])
    assert lo < point < hi and hi - lo > 0.05
    big_labels, big_pred, big_groups = _pairs(400)
    big_lo, big_hi = interval(bootstrap_macro_f1(big_labels, {"m": big_pred}, big_groups)["m"])
    assert big_hi - big_lo < (hi - lo) / 2  # 16x the posts: about a quarter the width


def test_perfect_and_identical_predictions():
    labels, pred, groups = _pairs(20)
    s = bootstrap_macro_f1(labels, {"perfect": labels, "a": pred, "b": pred.copy()}, groups)
    assert interval(s["perfect"]) == [1.0, 1.0]
    assert interval(s["a"] - s["b"]) == [0.0, 0.0]  # same resamples: a paired difference
    again = bootstrap_macro_f1(labels, {"a": pred}, groups)["a"]
    assert np.array_equal(again, s["a"])  # deterministic per seed


def test_corrected_ttest_matches_a_hand_computed_case():
    # d = (0.05, 0.06, 0.01): mean 0.04, s^2 = (0.01^2 + 0.02^2 + 0.03^2) / 2 = 7e-4;
    # 3 folds: corrected variance (1/3 + 1/2) * 7e-4, se = 0.0241523, t = 1.656157, df 2.
    # Student t with 2 df: P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)) -> p = 0.239530;
    # t(0.975, 2) = 4.302653 -> half-width 0.103918.
    out = corrected_ttest([0.70, 0.72, 0.68], [0.65, 0.66, 0.67], 1 / 2)
    assert out["difference"] == pytest.approx(0.04)
    assert out["t"] == pytest.approx(1.656157, abs=1e-5)
    assert out["df"] == 2
    assert out["p"] == pytest.approx(0.239530, abs=1e-5)
    assert out["ci_low"] == pytest.approx(0.04 - 0.103918, abs=1e-5)
    assert out["ci_high"] == pytest.approx(0.04 + 0.103918, abs=1e-5)
    # The correction matters: the plain paired t-test (ratio 0) is more confident.
    assert corrected_ttest([0.70, 0.72, 0.68], [0.65, 0.66, 0.67], 0.0)["p"] < out["p"]


def test_corrected_ttest_with_equal_differences_has_no_p_value():
    out = corrected_ttest([0.5, 0.75], [0.25, 0.5], 1.0)
    assert out["difference"] == 0.25 and np.isnan(out["p"])
