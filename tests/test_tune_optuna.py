"""What Optuna learns from a search: the real OptunaSearch subclass against a real study."""

import optuna
import pytest
import yaml

from nli_tune.ray_search import tune_distributions
from nli_tune.space import load_space
from nli_tune.tune_optuna import make_scheduler, make_searcher


def _space(tmp_path, **extra):
    raw = {
        "name": "t",
        "num_samples": 9,
        "folds": 2,
        "metric": {"scheduler": "cv_pr_auc", "searcher": "cv_roc_auc_within"},
        "params": {"lr": {"loguniform": [1e-4, 1e-3]}},
        "fixed": {"model": "tiny-random", "num_layers": None, "epochs": 3},
    } | extra
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_space(str(path))


def _searcher(space):
    searcher = make_searcher(space)
    searcher.set_search_properties(None, None, tune_distributions(space))
    return searcher


def test_asha_stopped_trial_is_pruned_at_its_rung_and_a_finished_one_complete(tmp_path):
    searcher = _searcher(_space(tmp_path))
    metric = "cv_roc_auc_within"
    for tid in ("stopped", "finished", "failed"):
        assert "lr" in searcher.suggest(tid)
    # Tune passes the result that made ASHA stop a trial to on_trial_complete only.
    searcher.on_trial_complete("stopped", {"epoch": 1, metric: 0.61, "training_iteration": 1})
    searcher.on_trial_result("finished", {"epoch": 1, metric: 0.55, "training_iteration": 1})
    searcher.on_trial_result("finished", {"epoch": 3, metric: 0.72, "training_iteration": 2})
    searcher.on_trial_complete("finished", {"epoch": 3, metric: 0.72, "training_iteration": 2})
    searcher.on_trial_complete("failed", None, error=True)
    trials = {t.number: t for t in searcher._ot_study.trials}
    stopped, finished, failed = trials[0], trials[1], trials[2]
    assert stopped.state == optuna.trial.TrialState.PRUNED
    assert stopped.intermediate_values == {1: 0.61}
    assert finished.state == optuna.trial.TrialState.COMPLETE and finished.value == 0.72
    assert finished.intermediate_values == {1: 0.55, 3: 0.72}  # steps are epochs
    assert failed.state == optuna.trial.TrialState.FAIL


def test_a_trial_with_fewer_sampled_epochs_that_ran_them_all_is_complete(tmp_path):
    space = _space(
        tmp_path,
        params={"lr": {"loguniform": [1e-4, 1e-3]}, "epochs": {"choice": [2, 4]}},
        fixed={"model": "tiny-random", "num_layers": None},
        points_to_evaluate=[{"lr": 1e-4, "epochs": 2}],
    )
    searcher = _searcher(space)
    assert searcher.suggest("short")["epochs"] == 2
    searcher.on_trial_complete("short", {"epoch": 2, "cv_roc_auc_within": 0.7})
    (trial,) = searcher._ot_study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.7


@pytest.mark.parametrize("scheduler", ["asha", "none"])
def test_scheduler_and_searcher_take_the_space_metrics_and_startup(tmp_path, scheduler):
    space = _space(tmp_path, scheduler=scheduler, startup_trials=3)
    searcher = make_searcher(space)
    assert searcher.metric == "cv_roc_auc_within" and searcher._sampler._n_startup_trials == 3
    made = make_scheduler(space, 3)
    if scheduler == "asha":
        assert made.metric == "cv_pr_auc" and made._time_attr == "epoch"
    else:
        assert type(made).__name__ == "FIFOScheduler"
