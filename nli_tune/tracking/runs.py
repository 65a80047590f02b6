"""MLflow runs of a search, written from the search driver only (sqlite allows one writer).

One parent run per search and one nested run per trial (`mlflow.parentRunId`); the Tune
callback that feeds them is tuning/mlflow_callback.py, and this module imports no Ray. On
`--resume` runs are found by tag instead of duplicated. While MLflow is unreachable the
records wait in a file next to the outputs; `--resume` replays them.
Only ids, params, metrics and counts are logged, never post text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nli_tune.core.errors import UserError, first_line
from nli_tune.study.space import SearchSpace
from nli_tune.tracking.views import experiment_tags

PARENT_ROLE, TRIAL_ROLE = "search", "trial"


def absolute_uri(uri: str) -> str:
    """A sqlite URI with an absolute path (`sqlite:///mlflow.db` is relative to the working
    folder), so that exports still find the store from elsewhere; others unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    return prefix + str(Path(uri[len(prefix) :]).resolve())


def mlflow_client(uri: str):
    """An MlflowClient on `uri`, with MLflow's and alembic's INFO chatter off."""
    import logging

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def open_parent_run(
    uri: str,
    experiment: str,
    search_id: str,
    params: dict[str, Any],
    tags: dict[str, str],
    experiment_tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """(experiment id, parent run id): found by `search_id` tag on resume, else created.
    `experiment_tags` are set every time: the latest search decides the experiment's view."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    for key, value in (experiment_tags or {}).items():
        client.set_experiment_tag(exp_id, key, value)
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


def open_search_run(uri: str, space: SearchSpace, search_id: str, fingerprint: str):
    """(experiment id, parent run id); an unusable --mlflow-uri is the user's error, found
    before the search writes anything of its own."""
    try:
        return open_parent_run(
            uri,
            space.name,
            search_id,
            params={
                "num_samples": space.num_samples,
                "folds": space.folds,
                "scheduler": space.scheduler,
                "seed": space.seed,
                "scheduler_metric": space.scheduler_metric,
                "searcher_metric": space.searcher_metric,
                "startup_trials": space.n_startup_trials,
                # Validation is scored at these epochs only (and each trial's last).
                "scored_epochs": ",".join(map(str, space.rungs())) or "every",
            },
            tags={"data_fingerprint": fingerprint[:16], "space": str(space.source)},
            experiment_tags=experiment_tags(
                space.searcher_metric, space.scheduler_metric, list(space.params)
            ),
        )
    except Exception as err:
        reason = first_line(err)
        raise UserError(
            f"--mlflow-uri {uri}: MLflow cannot use it ({type(err).__name__}: {reason})"
        ) from err


class Tracker:
    """Writes a search's records into MLflow: nested trial runs under the parent run.

    Every write is a plain record (a dict), so that what MLflow cannot take while it is
    unreachable can be kept in a file and applied later, in order, without duplicates:
    a trial's run is found by its tags before one is created, an epoch already logged
    is skipped, tags and statuses are set idempotently.
    """

    def __init__(self, uri: str, exp_id: str, parent_id: str, search_id: str):
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.search_id = search_id
        self._client = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._last_step: dict[str, int] = {}  # trial_id -> last logged epoch

    @property
    def client(self):
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    def apply(self, record: dict[str, Any]) -> None:
        kind, tid = record["kind"], record.get("trial_id")
        if kind == "trial_start":  # a resumed or retried trial's run is RUNNING again
            self.client.update_run(self.run_id(tid, record["params"]), status="RUNNING")
        elif kind == "epoch":
            self._log_epoch(tid, record)
        elif kind == "trial_tags":
            self.client.log_batch(self.run_id(tid), tags=_tags(record["tags"]))
        elif kind == "trial_end":
            rid = self.run_id(tid)
            self.client.log_batch(rid, tags=_tags(record["tags"]))
            self.client.set_terminated(rid, record["status"])
        elif kind == "parent_artifact":
            if Path(record["path"]).exists():  # a file removed since is not worth failing on
                self.client.log_artifact(self.parent_id, record["path"])
        elif kind == "parent_metric":
            self.client.log_metric(self.parent_id, record["key"], record["value"])
        elif kind == "parent_end":
            self.client.set_terminated(self.parent_id, record["status"])
        else:
            raise ValueError(f"unknown tracking record kind {kind!r}")

    def run_id(self, tid: str, params: dict[str, Any] | None = None) -> str:
        """The trial's nested run: found by its tags (a resumed search or a replay
        continues it), else created with the trial's whole config as params."""
        if tid in self._runs:
            return self._runs[tid]
        found = self.client.search_runs(
            [self.exp_id], f"tags.trial_id = '{tid}' and tags.search_id = '{self.search_id}'"
        )
        if found:
            rid = found[0].info.run_id
            history = self.client.get_metric_history(rid, "cv_macro_f1")
            self._last_step[tid] = max((m.step for m in history), default=0)
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
            items = sorted((params or {}).items())
            self.client.log_batch(rid, params=[_param(k, v) for k, v in items])
            self._last_step[tid] = 0
        self._runs[tid] = rid
        return rid

    def _log_epoch(self, tid: str, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        rid, step = self.run_id(tid), record["step"]
        if step <= self._last_step.get(tid, 0):
            return  # re-reported after a restart or a resume: already logged
        metrics = [Metric(k, v, record["time"], step) for k, v in record["metrics"].items()]
        self.client.log_batch(rid, metrics=metrics, tags=_tags(record["tags"]))
        self._last_step[tid] = step

    def trial_runs(self) -> dict[str, str]:
        """trial_id -> run_id of this search, read back from MLflow."""
        runs = self.client.search_runs(
            [self.exp_id], f"tags.search_id = '{self.search_id}' and tags.role = '{TRIAL_ROLE}'"
        )
        return {r.data.tags["trial_id"]: r.info.run_id for r in runs}

    def known_runs(self) -> dict[str, str]:
        return dict(self._runs)

    def ended_trials(self) -> set[str]:
        """Trials whose runs ended (completed, stopped by ASHA or failed)."""
        runs = self.client.search_runs(
            [self.exp_id],
            f"tags.search_id = '{self.search_id}' and tags.role = '{TRIAL_ROLE}' "
            f"and attributes.status != 'RUNNING'",
        )
        return {r.data.tags["trial_id"] for r in runs}


def read_pending(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay_pending(path: Path, tracker: Tracker) -> int:
    """Apply the records kept while MLflow was unreachable, in order; then remove the file.
    Returns how many. A failure leaves the file as it was (records are idempotent, so the
    next replay may repeat the ones that went through)."""
    records = read_pending(path)
    for record in records:
        tracker.apply(record)
    path.unlink()
    return len(records)


def _tags(tags: dict[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)[:500]) for k, v in tags.items()]


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value)[:500])
