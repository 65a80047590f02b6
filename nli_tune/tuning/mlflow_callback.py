"""The Tune callback that writes each trial into MLflow as a nested run of the search's
parent run (Ray's own MLflow callback has no nested runs). It runs in the driver process.

Once MLflow fails it says so in one line and keeps the records in a pending file that
`--resume` replays (see tracking/runs.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune

from nli_tune.core.errors import first_line
from nli_tune.study.run_files import FAILED, epoch_status
from nli_tune.study.selection import CONFIRMATION, SEARCH
from nli_tune.study.space import CONFIRMS_KEY, REPEAT_KEY
from nli_tune.tracking.runs import TRIAL_ROLE, Tracker, read_pending
from nli_tune.tuning.trial import trial_failure

# Per-epoch trial numbers logged besides cv_*, fold*, worker_* (see tuning.trial.cross_fold_mean).
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
        # Which stage the trial is: a search sample, or a confirmation rerun of one.
        confirms = trial.config.get(CONFIRMS_KEY)
        tags = {"stage": CONFIRMATION if confirms else SEARCH}
        if confirms:
            tags |= {"confirms": str(confirms), "repeat": str(trial.config.get(REPEAT_KEY))}
        self.write({"kind": "trial_tags", "trial_id": trial.trial_id, "tags": tags})

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
        epochs = int((trial.last_result or {}).get("epoch", 0))
        tags = {"status": FAILED, "epochs_run": str(epochs)}
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
