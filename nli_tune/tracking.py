"""MLflow tracking from the search driver only (sqlite allows one writer).

One parent run per search and one nested run per trial (`mlflow.parentRunId`). Ray's own
MLflow callback has no nested runs, so this Tune callback writes them. It runs in the
driver process; on `--resume` it finds the existing runs by tag instead of duplicating.
While MLflow is unreachable its records wait in a file next to the outputs; `--resume`
replays them.
Only ids, params, metrics and counts are logged, never post text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune

from nli_tune.core.errors import first_line

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
    uri: str,
    experiment: str,
    search_id: str,
    params: dict[str, Any],
    tags: dict[str, str],
    experiment_tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """(experiment id, parent run id): found by `search_id` tag on resume, else created.
    `experiment_tags` are set every time: the latest search decides the experiment's view."""
    client = _client(uri)
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
            self._client = _client(self.uri)
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


# Per-epoch trial numbers logged besides cv_*, fold*, worker_* (see tune_trial.aggregate).
TRIAL_NUMBERS = ("folds_stopped", "epoch_compute_s", "compute_s")


class MlflowTrialCallback(tune.Callback):
    """Nested MLflow run per Tune trial: params, per-epoch metrics, final status.

    Once MLflow fails (a server that went away, a full disk), it says so in one line and
    keeps every later record in `pending` (JSON lines) instead: training goes on, and
    `replay_pending` writes them once MLflow is back (the search's --resume does).
    """

    def __init__(
        self,
        uri: str,
        exp_id: str,
        parent_id: str,
        search_id: str,
        base_config: dict[str, Any],
        pending: Path,
        say=print,
    ):
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.search_id = search_id
        self.base_config = base_config  # training keys every trial shares, logged as params
        self.pending, self.say = pending, say
        self._reset()

    def _reset(self) -> None:
        self.tracker = Tracker(self.uri, self.exp_id, self.parent_id, self.search_id)
        self._ended: set[str] = set()  # trials that ended this session

    def __getstate__(self):  # Tune pickles callbacks into its experiment state
        state = self.__dict__.copy()
        state.update(tracker=None, say=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.say = print
        self._reset()

    @property
    def offline(self) -> bool:
        """Records are waiting in the pending file: later ones queue behind them, in order
        (the file, not a flag, decides: Tune may run a restored copy of this callback)."""
        return self.pending.exists()

    def write(self, record: dict[str, Any]) -> None:
        """Apply a record now, or keep it for later once MLflow has failed."""
        if not self.offline:
            try:
                self.tracker.apply(record)
                return
            except Exception as err:
                reason = first_line(err, 120)
                self.say(
                    f"MLflow failed ({type(err).__name__}: {reason}); the search goes on and "
                    f"keeps its MLflow records in {self.pending}; --resume replays them",
                    flush=True,
                )
        with self.pending.open("a") as f:
            # default=str: a numpy number in a sampled config must not stop the search
            f.write(json.dumps(record, default=str) + "\n")

    def trial_runs(self) -> dict[str, str]:
        """trial_id -> run_id; while MLflow is unreachable, the runs this session created or
        found before it went away (a replay fills in the others)."""
        if not self.offline:
            try:
                return self.tracker.trial_runs()
            except Exception:
                pass
        return self.tracker.known_runs()

    def ended_trials(self) -> set[str]:
        """Trials Tune really ended, this session or an earlier one. A Ctrl-C marks the
        running trials TERMINATED in Tune's own result objects without ending them through
        this callback, so their runs stay RUNNING."""
        ended = set(self._ended) | {
            r["trial_id"] for r in read_pending(self.pending) if r["kind"] == "trial_end"
        }
        if not self.offline:
            try:
                ended |= self.tracker.ended_trials()
            except Exception:
                pass  # what this session saw end is enough to judge its own trials
        return ended

    def on_trial_start(self, iteration, trials, trial, **info):
        params = self.base_config | dict(trial.config)  # the whole training config
        self.write({"kind": "trial_start", "trial_id": trial.trial_id, "params": params})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {
            k: float(v)
            for k, v in result.items()
            if (k.startswith(("cv_", "fold", "worker_")) or k in TRIAL_NUMBERS)
            and isinstance(v, int | float)
        }
        tags = {}
        if result.get("worker_failures"):  # Ray Train restarted the folds: say so on the run
            tags = {
                "worker_failures": str(int(result["worker_failures"])),
                "last_worker_failure": str(result.get("last_worker_failure", "")),
            }
        self.write(
            {
                "kind": "epoch",
                "trial_id": trial.trial_id,
                "step": int(result["epoch"]),
                "time": int(time.time() * 1000),
                "metrics": metrics,
                "tags": tags,
            }
        )

    def on_trial_recover(self, iteration, trials, trial, **info):
        from nli_tune.tune_trial import trial_failure

        tags = {  # Tune restarts the trial (its driver was lost): say why
            "trial_restarts": str(trial.run_metadata.num_failures),
            "last_restart_reason": trial_failure(trial),
        }
        self.write({"kind": "trial_tags", "trial_id": trial.trial_id, "tags": tags})

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = int((trial.last_result or {}).get("epoch", 0))
        status = epoch_status(epochs, trial.config, self.base_config["epochs"])
        self._finish(trial, {"status": status, "epochs_run": str(epochs)}, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        from nli_tune.tune_trial import trial_failure

        epochs = int((trial.last_result or {}).get("epoch", 0))
        tags = {"status": "failed", "epochs_run": str(epochs)}
        self._finish(trial, tags | {"error": trial_failure(trial)}, "FAILED")

    def _finish(self, trial, tags: dict[str, str], mlflow_status: str) -> None:
        self._ended.add(trial.trial_id)
        record = {"kind": "trial_end", "trial_id": trial.trial_id, "tags": tags}
        self.write(record | {"status": mlflow_status})

    def on_experiment_end(self, trials, **info):
        # A hard kill can lose a just-started trial from Tune's snapshot; its run would
        # duplicate the trial Tune re-creates on resume, so it is removed.
        if self.offline:
            return
        known = {t.trial_id for t in trials}
        client = self.tracker.client
        try:
            for run in client.search_runs(
                [self.exp_id],
                f"tags.search_id = '{self.search_id}' and tags.role = "
                f"'{TRIAL_ROLE}' and attributes.status = 'RUNNING'",
            ):
                if run.data.tags.get("trial_id") not in known:
                    client.delete_run(run.info.run_id)
        except Exception as err:  # tidying only: never fail a finished search on it
            self.say(f"note: could not tidy MLflow runs ({type(err).__name__})", flush=True)


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
