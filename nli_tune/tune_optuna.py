"""The search's scheduler and searcher: ASHA and Optuna's TPE, each on its own metric.

Ray's `OptunaSearch` tells Optuna that a trial ASHA stopped is COMPLETE, with its value at
the rung, so TPE would learn epoch-1 values as if they were final. Here such a trial is
told PRUNED, its rung value reported as the intermediate value at that epoch: TPE ranks
pruned trials below complete ones, deeper ones first, by their last intermediate value.
"""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from nli_tune.space import SearchSpace

MODE = "max"  # every metric in space.METRICS is higher-is-better


class RungAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that reports intermediate values by epoch and tells Optuna PRUNED for
    a trial stopped before its own last epoch."""

    def __init__(self, *args, base_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._base_epochs = base_epochs  # a trial's epochs unless the space samples them
        self._epochs: dict[str, int] = {}  # trial_id -> its own epochs

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._epochs[trial_id] = int(config.get("epochs", self._base_epochs))
        return config

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_result(trial_id, result)
        # The step is the epoch, not Tune's report count: reports come at rungs only.
        self._ot_trials[trial_id].report(result[self.metric], int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
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


def make_searcher(space: SearchSpace) -> RungAwareOptunaSearch:
    sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=space.n_startup_trials)
    return RungAwareOptunaSearch(
        sampler=sampler,
        metric=space.searcher_metric,
        mode=MODE,
        points_to_evaluate=space.points_to_evaluate or None,
        base_epochs=space.trial_config({}).epochs,
    )
