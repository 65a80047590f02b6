"""What Optuna learns from a search: the real OptunaSearch subclass against a real study."""

import optuna
import pytest
import yaml

from nli_tune.study.space import load_space
from nli_tune.tuning.optuna_search import make_scheduler, make_searcher
from nli_tune.tuning.tuner import tune_distributions


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


def test_a_resumed_stored_study_has_each_trial_once(tmp_path, caplog):
    """What Tune does to the searcher on --resume, against a real sqlite study: the
    searcher pickled before the search (tuner.pkl) is set up again, then restored from the
    last snapshot. Trial b finished after the snapshot (Tune runs it again), trial c was
    started after it (a kill lost it from Tune, which creates trial d instead)."""
    import pickle

    from nli_tune.tuning.optuna_search import TUNE_ID_ATTR

    space = _space(tmp_path, points_to_evaluate=[{"lr": 1e-4}])
    db = tmp_path / "optuna.db"
    first = make_searcher(space, db)
    pristine = pickle.dumps(first)  # as Tune pickles it into tuner.pkl, before the search
    dists, metric = tune_distributions(space), "cv_roc_auc_within"
    first.set_search_properties(None, None, dists)

    def done(searcher, tid, value):
        searcher.on_trial_result(tid, {"epoch": 3, metric: value, "training_iteration": 1})
        searcher.on_trial_complete(tid, {"epoch": 3, metric: value, "training_iteration": 1})

    assert first.suggest("a")["lr"] == 1e-4  # the enqueued point comes first
    done(first, "a", 0.6)
    first.suggest("b")
    first.on_trial_result("b", {"epoch": 1, metric: 0.5, "training_iteration": 1})
    first.save(str(tmp_path / "snapshot.pkl"))
    done(first, "b", 0.7)
    lost_lr = first.suggest("c")["lr"]  # then the driver is killed

    resumed = pickle.loads(pristine)
    resumed.set_search_properties(None, None, dists)  # Tune sets it up again, then restores
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    done(resumed, "b", 0.65)  # Tune runs b again from its checkpoint: the study keeps 0.7
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # nor told twice
    assert resumed.suggest("d")["lr"] == lost_lr  # Tune's new trial takes the lost one
    done(resumed, "d", 0.8)
    resumed.suggest("e")
    done(resumed, "e", 0.75)

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    by_tune = {t.user_attrs[TUNE_ID_ATTR]: t for t in study.trials}
    assert len(study.trials) == 4 and sorted(by_tune) == ["a", "b", "d", "e"]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert [by_tune[k].value for k in "abde"] == [0.6, 0.7, 0.8, 0.75]
    assert sum(t.params["lr"] == 1e-4 for t in study.trials) == 1  # not enqueued again
    assert by_tune["d"].params["lr"] == lost_lr
    assert study.metric_names == [metric]  # optuna-dashboard labels the value with it


def test_resuming_a_search_saved_before_the_package_layout_is_one_line(tmp_path):
    """Tune's tuner.pkl names our classes by module path; one from the flat layout (here a
    searcher in nli_tune.tune_optuna) cannot load: a user error, not Tune's traceback."""
    from ray import tune

    from nli_tune.core.errors import UserError
    from nli_tune.tuning.trial import run_trial
    from nli_tune.tuning.tuner import _restore

    (tmp_path / "tuner.pkl").write_bytes(b"cnli_tune.tune_optuna\nRungAwareOptunaSearch\n.")
    with pytest.raises(UserError, match=r"No module named 'nli_tune.tune_optuna'.*--output"):
        _restore(tune, str(tmp_path), run_trial)
