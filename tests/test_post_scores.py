"""Aggregation of unit scores to posts and their calibration, on hand-made numbers."""

import math

import numpy as np
import pytest
import torch

from nli_tune.model.aggregate import LSE_R, aggregate, top_units
from nli_tune.model.calibration import Calibration, best_threshold, fit_calibration

# Three bags: [1, 3, -2], [0.5, 0.5], [4] (units listed out of bag order on purpose).
LOGITS = torch.tensor([3.0, 0.5, 1.0, 4.0, -2.0, 0.5])
BAGS = torch.tensor([0, 1, 0, 2, 0, 1])


def test_max_lse_topk_match_hand_computed_values():
    assert aggregate("max", LOGITS, BAGS, 3).tolist() == [3.0, 0.5, 4.0]
    lse = (
        1 / LSE_R * math.log((math.exp(LSE_R * 1) + math.exp(LSE_R * 3) + math.exp(-2 * LSE_R)) / 3)
    )
    assert aggregate("lse", LOGITS, BAGS, 3).tolist() == pytest.approx([lse, 0.5, 4.0], abs=1e-5)
    assert aggregate("topk", LOGITS, BAGS, 3, k=2).tolist() == pytest.approx([2.0, 0.5, 4.0])
    assert aggregate("topk", LOGITS, BAGS, 3, k=1).tolist() == pytest.approx([3.0, 0.5, 4.0])
    # lse lies between the mean and the max of its bag
    assert (1 + 3 - 2) / 3 < lse < 3


def test_attention_weights_softmax_of_logit_plus_learned_score():
    att = torch.tensor([0.0, 0.0, 2.0, 0.0, 0.0, 1.0])
    out = aggregate("attention", LOGITS, BAGS, 3, attention=att)
    e = np.array([1 + 2.0, 3 + 0.0, -2 + 0.0])  # bag 0: logit + attention of units 2, 0, 4
    w = np.exp(e) / np.exp(e).sum()
    bag1 = np.exp([0.5, 1.5]) / np.exp([0.5, 1.5]).sum()
    expected = [float(w @ [1, 3, -2]), float(bag1 @ [0.5, 0.5]), 4.0]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)


def test_gradients_reach_only_the_units_that_decide():
    logits = LOGITS.clone().requires_grad_(True)
    aggregate("max", logits, BAGS, 3).sum().backward()
    assert logits.grad.tolist() == [1.0, 0.5, 0.0, 1.0, 0.0, 0.5]  # ties share
    logits.grad = None
    aggregate("topk", logits, BAGS, 3, k=2).sum().backward()
    assert logits.grad.tolist() == pytest.approx([0.5, 0.5, 0.5, 1.0, 0.0, 0.5])


def test_top_units_names_each_bags_best_unit():
    assert top_units(LOGITS, BAGS, 3).tolist() == [0, 1, 3]  # a tie goes to the first


def test_best_threshold_maximises_macro_f1_on_a_hand_case():
    probs = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    # Calling the top three matched is perfect: the cut falls between 0.35 and 0.3.
    assert best_threshold(probs, labels) == pytest.approx(0.325)
    labels = np.array([1, 0, 0, 0, 0, 0])
    assert best_threshold(probs, labels) == pytest.approx(0.85)


def test_platt_calibration_is_monotone_and_fit_on_the_given_posts():
    rng = np.random.default_rng(0)
    labels = np.tile((np.arange(9) == 3).astype(int), 40)  # 40 posts x 9 criteria
    logits = 6.0 * labels + rng.normal(0, 1.5, len(labels)) + 3.0  # shifted, too confident
    cal = fit_calibration(logits, labels)
    assert cal.method == "platt" and cal.posts == 40 and cal.a > 0
    probs = cal.prob(logits)
    assert np.all(np.diff(probs[np.argsort(logits)]) >= 0)
    # Calibrated: the mean probability is close to the matched rate (1/9).
    assert abs(probs.mean() - labels.mean()) < 0.02
    assert 0 < cal.threshold < 1
    # One class only: nothing to fit, the raw sigmoid at 0.5 stays.
    flat = fit_calibration(logits, np.zeros_like(labels))
    assert flat == Calibration(posts=40)


def test_per_criterion_calibration_decides_a_criterion_whose_scores_run_low():
    """Criterion 0's logits sit 4 below the others': one shared rule never calls it matched,
    its own rule (shrunk toward the shared one by its positives) does; a criterion with no
    positive keeps the shared rule exactly."""
    rng = np.random.default_rng(0)
    posts = 400
    labels = (rng.random((posts, 9)) < 0.15).astype(int)
    labels[:, 8] = 0  # criterion 8: no positive among these posts
    logits = rng.normal(0, 1, (posts, 9)) + 3.0 * labels
    logits[:, 0] -= 4.0
    shared = fit_calibration(logits.ravel(), labels.ravel())
    own = fit_calibration(logits.ravel(), labels.ravel(), "per_criterion")
    assert shared.criteria is None and len(own.criteria) == 9
    assert not shared.decide(logits)[:, 0].any()
    decided = own.decide(logits)
    recall = (decided[:, 0] & (labels[:, 0] == 1)).sum() / labels[:, 0].sum()
    assert recall > 0.5
    n = labels[:, 0].sum()
    assert own.criteria[0]["positives"] == n and own.criteria[0]["weight"] == pytest.approx(
        n / (n + 5)
    )
    assert own.criteria[8]["weight"] == 0 and own.criteria[8]["threshold"] == shared.threshold
    assert own.prob(logits)[:, 8] == pytest.approx(shared.prob(logits)[:, 8])
    # the flat post-major form decides the same pairs, thresholds per criterion
    assert (own.decide(logits.ravel()) == decided.ravel()).all()
    cuts = own.cutoffs(logits.size).reshape(posts, 9)
    assert (cuts == cuts[0]).all() and len(set(cuts[0].round(6))) > 1
