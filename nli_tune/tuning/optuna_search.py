"""The search's scheduler and searcher: ASHA and Optuna's TPE, each on its own metric.

Ray's `OptunaSearch` tells Optuna that a trial ASHA stopped is COMPLETE, with its value at
the rung, so TPE would learn epoch-1 values as if they were final. Here such a trial is
told PRUNED, its rung value reported as the intermediate value at that epoch: TPE ranks
pruned trials below complete ones, deeper ones first, by their last intermediate value.

The study lives in OUTPUT/<name>/optuna.db (sqlite; the driver is its one writer), where
optuna-dashboard reads it. Tune pickles this searcher into its own checkpoints and a
resumed search continues the same study; see `RungAwareOptunaSearch` for what that needs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from nli_tune.study.space import SearchSpace

MODE = "max"  # every metric in space.METRICS is higher-is-better
TUNE_ID_ATTR = "tune_trial_id"  # an Optuna trial's user attribute: its Tune trial id


class RungAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that reports intermediate values by epoch and tells Optuna PRUNED for
    a trial stopped before its own last epoch.

    With a stored study, `--resume` must not add trials to it. Tune restores this
    searcher from its last snapshot (the study's rows stay in the file), so:
    - points_to_evaluate are enqueued once, when the study is new (Tune sets the
      searcher up again on resume, before it restores the snapshot);
    - a trial Optuna started after the snapshot (a kill lost it from Tune's state, so
      Tune creates a new one) is handed to Tune's next new trial instead of a fresh one;
    - a trial that finished after the snapshot, which Tune runs again from its last
      checkpoint, keeps the state and value the study already has.
    """

    def __init__(self, *args, base_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._base_epochs = base_epochs  # a trial's epochs unless the space samples them
        self._epochs: dict[str, int] = {}  # trial_id -> its own epochs

    def _setup_study(self, mode):
        points = self._points_to_evaluate
        if self._storage is not None and self._study_name in _study_names(self._storage):
            self._points_to_evaluate = []  # resumed: they were enqueued when it was new
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points
        if not isinstance(self.metric, list):  # the dashboard names the value by it
            with warnings.catch_warnings():  # "experimental": a line on every search
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names([self.metric])

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        if new and (lost := self._lost_trial()) is not None:
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, lost)
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID_ATTR, trial_id)
        if isinstance(config, dict):
            self._epochs[trial_id] = int(config.get("epochs", self._base_epochs))
        return config

    def _lost_trial(self) -> int | None:
        """A RUNNING trial of the stored study that no Tune trial has: started after the
        snapshot this searcher was restored from (see the class docstring)."""
        if self._storage is None or self._ot_study is None:
            return None
        mine = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next((t._trial_id for t in running if t._trial_id not in mine), None)

    def _finished(self, trial_id: str) -> bool:
        """The study already ended this trial (in a session before a resume)."""
        if trial_id not in self._ot_trials:
            return False
        ot_id = self._ot_trials[trial_id]._trial_id
        return self._ot_study._storage.get_trial(ot_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_result(trial_id, result)
        if self._finished(trial_id):
            return
        # The step is the epoch, not Tune's report count: reports come at rungs only.
        self._ot_trials[trial_id].report(result[self.metric], int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id not in self._completed_trials and self._finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        own = self._epochs.get(trial_id, self._base_epochs)
        stopped = result and not error and int(result.get("epoch", own)) < own
        if stopped and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            value = result.get(self.metric)
            if value is not None:  # Tune does not pass the stopping result to on_trial_result
                self._ot_trials[trial_id].report(value, int(result["epoch"]))
            result = None  # OptunaSearch tells PRUNED when it gets no result and no error
        super().on_trial_complete(trial_id, result=result, error=error)


def make_scheduler(space: SearchSpace, max_epochs: int):
    if space.scheduler == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        metric=space.scheduler_metric,
        mode=MODE,
        max_t=max_epochs,
        grace_period=space.grace_period,
        reduction_factor=space.reduction_factor,
    )


def _study_names(storage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def study_storage(path: Path) -> optuna.storages.RDBStorage:
    """The sqlite storage of a search's study (an absolute path: Tune pickles it)."""
    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")


def make_searcher(space: SearchSpace, study_file: Path | None = None) -> RungAwareOptunaSearch:
    """The searcher; with `study_file` its study is stored there under the space's name."""
    sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=space.n_startup_trials)
    return RungAwareOptunaSearch(
        sampler=sampler,
        metric=space.searcher_metric,
        mode=MODE,
        points_to_evaluate=space.points_to_evaluate or None,
        base_epochs=space.trial_config({}).epochs,
        study_name=space.name if study_file else None,
        storage=study_storage(study_file) if study_file else None,
    )
