"""The default model learns, and a fit that does not is caught: real Gemma-3 270M weights
(the default: all 18 layers adapted), sentence units, trained on the bundled sample's
first 100 posts and scored on the other 50.

The floor comes from `python -m nli_tune.bench learning` over seeds 0-4
(benchmarks/learning.json), set below the lowest seed by a margin for run-to-run noise
and well above the 0.5 of a model that learns nothing. With the learning rate at 0 the
head stays at zero and every post scores the same (within-criterion ROC-AUC 0.5): the
learned-fit rule (training/learned.py) must call that fit failed and the one that learned
a success.
"""

from nli_tune.measure.learning import learning_run

FLOOR = 0.80  # within-criterion ROC-AUC on the 50 held-out posts; nothing learned: 0.5
SEED = 0


def test_the_default_model_learns_criteria_within_posts_and_the_rule_says_so():
    run = learning_run(SEED)
    assert run["model_roc_auc_within"] > FLOOR, run
    assert run["model_roc_auc"] > FLOOR, run
    assert run["learned"] and run["loss_ratio"] < 0.5 and run["calib_roc_auc_within"] > 0.6, run


def test_a_fit_forced_not_to_learn_is_caught_by_the_rule():
    run = learning_run(SEED, lr=0.0)
    assert abs(run["model_roc_auc_within"] - 0.5) < 0.02, run  # it learned nothing
    assert not run["learned"], run
    assert run["loss_ratio"] > 0.9 and run["calib_roc_auc_within"] < 0.6, run
