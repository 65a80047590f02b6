"""MLflow tracking from the search driver only (sqlite allows one writer).

One parent run per search and one nested run per trial (`mlflow.parentRunId`). Ray's own
MLflow callback has no nested runs, so this Tune callback writes them. It runs in the
driver process; on `--resume` it finds the existing runs by tag instead of duplicating.
Only ids, params, metrics and counts are logged, never post text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune

PARENT_ROLE, TRIAL_ROLE = "search", "trial"


def epoch_status(epochs_run: int, config: dict[str, Any], default_epochs: int) -> str:
    """'completed' if a trial ran all of its own epochs (epochs may be searched, so they
    come from its config), else 'stopped early'. cv_results and MLflow both label by it."""
    own = int(config.get("epochs", default_epochs))
    return "completed" if epochs_run >= own else "stopped early"


def absolute_uri(uri: str) -> str:
    """A sqlite URI with an absolute path (`sqlite:///mlflow.db` is relative to the working
    folder), so that exports still find the store from elsewhere; others unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    return prefix + str(Path(uri[len(prefix) :]).resolve())


def _client(uri: str):
    import logging

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def open_parent_run(
    uri: str, experiment: str, search_id: str, params: dict[str, Any], tags: dict[str, str]
) -> tuple[str, str]:
    """(experiment id, parent run id): found by `search_id` tag on resume, else created."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs(
        [exp_id], f"tags.role = '{PARENT_ROLE}' and tags.search_id = '{search_id}'"
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return exp_id, run_id
    run = client.create_run(
        exp_id, run_name=search_id, tags={"role": PARENT_ROLE, "search_id": search_id} | tags
    )
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return exp_id, run.info.run_id


class MlflowTrialCallback(tune.Callback):
    """Nested MLflow run per Tune trial: params, per-epoch metrics, final status."""

    def __init__(
        self,
        uri: str,
        exp_id: str,
        parent_id: str,
        search_id: str,
        base_config: dict[str, Any],
    ):
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.search_id = search_id
        self.base_config = base_config  # training keys every trial shares, logged as params
        self._reset()

    def _reset(self) -> None:
        self._mlflow = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._last_step: dict[str, int] = {}  # trial_id -> last logged epoch

    def __getstate__(self):  # Tune pickles callbacks into its experiment state
        state = self.__dict__.copy()
        state.update(_mlflow=None, _runs={}, _last_step={})
        return state

    @property
    def client(self):
        if self._mlflow is None:
            self._mlflow = _client(self.uri)
        return self._mlflow

    def run_id(self, trial) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = self.client.search_runs(
            [self.exp_id], f"tags.trial_id = '{tid}' and tags.search_id = '{self.search_id}'"
        )
        if found:  # resumed search: continue the trial's run
            rid = found[0].info.run_id
            history = self.client.get_metric_history(rid, "cv_macro_f1")
            self._last_step[tid] = max((m.step for m in history), default=0)
            self.client.update_run(rid, status="RUNNING")
        else:
            rid = self.client.create_run(
                self.exp_id,
                run_name=f"trial_{tid}",
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    "trial_id": tid,
                    "search_id": self.search_id,
                    "role": TRIAL_ROLE,
                },
            ).info.run_id
            params = self.base_config | dict(trial.config)  # the whole training config
            self.client.log_batch(rid, params=[_param(k, v) for k, v in sorted(params.items())])
            self._last_step[tid] = 0
        self._runs[tid] = rid
        return rid

    def trial_runs(self) -> dict[str, str]:
        """trial_id -> run_id of this search, read back from MLflow (the callback Tune ran
        may be a restored copy of this one)."""
        runs = self.client.search_runs(
            [self.exp_id], f"tags.search_id = '{self.search_id}' and tags.role = '{TRIAL_ROLE}'"
        )
        return {r.data.tags["trial_id"]: r.info.run_id for r in runs}

    def ended_trials(self) -> set[str]:
        """Trials Tune really ended (completed, stopped by ASHA or failed), this session or
        an earlier one. A Ctrl-C marks the running trials TERMINATED in Tune's own result
        objects without ending them through this callback, so their runs stay RUNNING."""
        runs = self.client.search_runs(
            [self.exp_id],
            f"tags.search_id = '{self.search_id}' and tags.role = '{TRIAL_ROLE}' "
            f"and attributes.status != 'RUNNING'",
        )
        return {r.data.tags["trial_id"] for r in runs}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric, RunTag

        rid, step = self.run_id(trial), int(result["epoch"])
        if step <= self._last_step.get(trial.trial_id, 0):
            return  # re-reported after a resume: already logged
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if (k.startswith(("cv_", "fold")) or k == "folds_stopped")
            and isinstance(v, int | float)
        ]
        tags = []
        if result.get("worker_failures"):  # Ray Train restarted the folds: say so on the run
            tags = [
                RunTag("worker_failures", str(int(result["worker_failures"]))),
                RunTag("last_worker_failure", str(result.get("last_worker_failure", ""))[:500]),
            ]
        self.client.log_batch(rid, metrics=metrics, tags=tags)
        self._last_step[trial.trial_id] = step

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = int((trial.last_result or {}).get("epoch", 0))
        status = epoch_status(epochs, trial.config, self.base_config["epochs"])
        self._finish(trial, status, "FINISHED", epochs)

    def on_trial_recover(self, iteration, trials, trial, **info):
        from nli_tune.tune_trial import failure_line, trial_error_text

        rid = self.run_id(trial)  # Tune restarts the trial (its driver was lost): say why
        self.client.set_tag(rid, "trial_restarts", str(trial.run_metadata.num_failures))
        self.client.set_tag(rid, "last_restart_reason", failure_line(trial_error_text(trial)))

    def on_trial_error(self, iteration, trials, trial, **info):
        from nli_tune.tune_trial import failure_line, trial_error_text

        epochs = int((trial.last_result or {}).get("epoch", 0))
        self._finish(trial, "failed", "FAILED", epochs, error=failure_line(trial_error_text(trial)))

    def _finish(self, trial, status: str, mlflow_status: str, epochs: int, error: str = "") -> None:
        rid = self.run_id(trial)
        if error:
            self.client.set_tag(rid, "error", error)
        self.client.set_tag(rid, "status", status)
        self.client.set_tag(rid, "epochs_run", str(epochs))
        self.client.set_terminated(rid, mlflow_status)

    def on_experiment_end(self, trials, **info):
        # A hard kill can lose a just-started trial from Tune's snapshot; its run would
        # duplicate the trial Tune re-creates on resume, so it is removed.
        known = {t.trial_id for t in trials}
        for run in self.client.search_runs(
            [self.exp_id],
            f"tags.search_id = '{self.search_id}' and tags.role = "
            f"'{TRIAL_ROLE}' and attributes.status = 'RUNNING'",
        ):
            if run.data.tags.get("trial_id") not in known:
                self.client.delete_run(run.info.run_id)


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value)[:500])
