"""One compact line per trial event while a search runs (Ray's own 30-second status table
is too wide and too noisy to follow on 80 columns): a trial's start with its sampled
params, each epoch's cross-fold macro-F1, and how it ended. Runs in the driver as a Tune
callback; prints numbers and params only."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from nli_tune.study.run_files import COMPLETED, STOPPED
from nli_tune.study.space import DEFAULT_METRIC

# Short names of the metrics a search can judge on (space.METRICS), for 80-100 columns.
LABELS = {
    "cv_macro_f1": "cv macro-F1",
    "cv_criterion_macro_f1": "criterion macro-F1",
    "cv_roc_auc": "ROC-AUC",
    "cv_roc_auc_within": "within-AUC",
    "cv_pr_auc": "PR-AUC",
}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class ProgressLines(tune.Callback):
    def __init__(
        self,
        num_samples: int,
        params: list[str],
        default_epochs: int,
        metric: str = DEFAULT_METRIC,
        say=print,
    ):
        self.num_samples, self.params = num_samples, params
        self.metric = metric  # the metric trials are judged on, shown on every line
        self.default_epochs = default_epochs
        self.say = say
        self.started = time.time()
        self.index: dict[str, int] = {}  # trial_id -> 1-based order of first sight
        self.failures: dict[str, int] = {}  # trial_id -> worker failures already told

    def _tag(self, trial) -> str:
        n = self.index.setdefault(trial.trial_id, len(self.index) + 1)
        width = len(str(self.num_samples))
        return f"[{n:>{width}}/{self.num_samples}] {trial.trial_id}"

    def _clock(self) -> str:
        minutes, seconds = divmod(int(time.time() - self.started), 60)
        return f"{minutes}m{seconds:02d}s"

    def _epochs(self, trial) -> int:
        return int((trial.config or {}).get("epochs", self.default_epochs))

    def on_trial_start(self, iteration, trials, trial, **info):
        params = " ".join(f"{k}={_short(trial.config.get(k))}" for k in self.params)
        self.say(f"{self._tag(trial)} start  {params}  ({self._clock()})", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "cv_macro_f1" not in result:
            return
        failures = int(result.get("worker_failures", 0))
        if failures > self.failures.get(trial.trial_id, 0):
            self.failures[trial.trial_id] = failures
            self.say(
                f"{self._tag(trial)} recovered: Ray Train restarted its fold workers from "
                f"the last epoch checkpoint ({failures} failure(s); last: "
                f"{str(result.get('last_worker_failure', ''))[:80]})",
                flush=True,
            )
        self.say(
            f"{self._tag(trial)} epoch {int(result['epoch'])}/{self._epochs(trial)}  "
            f"cv macro-F1 {result['cv_macro_f1']:.3f} ± {result.get('cv_macro_f1_std', 0):.3f}"
            f"  ROC-AUC {result.get('cv_roc_auc', float('nan')):.3f}{self._judged(result)}"
            f"  ({self._clock()})",
            flush=True,
        )

    def _judged(self, result: dict) -> str:
        """The judged metric, where the line does not show it already."""
        if self.metric in ("cv_macro_f1", "cv_roc_auc") or self.metric not in result:
            return ""
        return f"  {LABELS[self.metric]} {result[self.metric]:.3f}"

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0))
        how = COMPLETED if epochs >= self._epochs(trial) else f"{STOPPED} (ASHA)"
        score = last.get(self.metric)
        tail = f": {LABELS[self.metric]} {score:.3f}" if score is not None else ""
        unit = "epoch" if epochs == 1 else "epochs"
        self.say(f"{self._tag(trial)} {how} after {epochs} {unit}{tail}", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        from nli_tune.tuning.trial import trial_failure

        self.say(
            f"{self._tag(trial)} restarting after: {trial_failure(trial)[:100]}"
            f" (it continues from its folds' last checkpoint)",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        from nli_tune.tuning.trial import trial_failure

        self.say(f"{self._tag(trial)} FAILED: {trial_failure(trial)}", flush=True)
