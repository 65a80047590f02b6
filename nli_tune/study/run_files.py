"""A search's run folder: the files in it, and the search identity that --resume checks.

No Ray here: the report, the MLflow UI command and the search entry read these too.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from nli_tune.core.errors import UserError
from nli_tune.study.space import SearchSpace

EPOCHS_FILE = "epochs.csv"  # in the run folder: every trial's cross-fold numbers per epoch
RESULTS_FILE = "cv_results.csv"  # in the run folder: one row per trial
PENDING_FILE = "mlflow_pending.jsonl"  # in the run folder: records MLflow could not take yet
IDENTITY_FILE = "search.json"  # in the run folder: the search id and what --resume must match
STUDY_FILE = "optuna.db"  # in the run folder: the Optuna study, for optuna-dashboard
FOLDS_FILE = "folds.json"  # in the run folder: the test posts and each CV fold's posts
ENSEMBLE_DIR = "ensemble"  # in the run folder: the exported trial's fold models as one model
# A trial's status in cv_results.csv, MLflow (tag status), the progress lines and the report.
COMPLETED = "completed"  # ran all of its own epochs
STOPPED = "stopped early"  # ASHA stopped it at a rung
FAILED = "failed"  # its training raised, after Ray Train's retries


def epoch_status(epochs_run: int, config: dict[str, Any], default_epochs: int) -> str:
    """COMPLETED if a trial ran all of its own epochs (epochs may be searched, so they
    come from its config), else STOPPED."""
    own = int(config.get("epochs", default_epochs))
    return COMPLETED if epochs_run >= own else STOPPED


def search_identity(space: SearchSpace, fingerprint: str) -> dict[str, Any]:
    """What a resumed search must share with the interrupted one (resources may change)."""
    identity = {
        "num_samples": space.num_samples,
        "folds": space.folds,
        "seed": space.seed,
        "scheduler": space.scheduler,
        "grace_period": space.grace_period,
        "reduction_factor": space.reduction_factor,
        "params": space.params,
        "fixed": space.fixed,
        "points_to_evaluate": space.points_to_evaluate,
        "scheduler_metric": space.scheduler_metric,
        "searcher_metric": space.searcher_metric,
        "startup_trials": space.n_startup_trials,
        "confirm": [space.confirm_top, space.confirm_seeds],
        "data_fingerprint": fingerprint,
    }
    return json.loads(json.dumps(identity, default=str))  # as it reads back from the file


def resolve_search_id(
    space: SearchSpace, fingerprint: str, run_dir: Path, resume: bool
) -> tuple[str, dict[str, Any]]:
    """A new id per fresh search (its MLflow runs are found by it, so a second search of
    the same space and data never reopens the first one's); on --resume the saved id, once
    the space, flags and data are checked to be the interrupted search's."""
    identity = search_identity(space, fingerprint)
    if not resume:
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        return f"{space.name}-{fingerprint[:8]}-{space.seed}-{stamp}", identity
    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        raise UserError(
            f"--resume: {path} is missing (an older nli_tune started that search); start "
            f"afresh with another --output"
        )
    saved = json.loads(path.read_text())
    for key, then in saved["identity"].items():
        now = identity.get(key)
        if now != then:
            raise UserError(
                f"--resume: {key} is {_brief(now)} now but was {_brief(then)} in the "
                f"interrupted search ({path}); resume with the same space file, flags and "
                f"--data-dir"
            )
    return saved["search_id"], identity


def load_search_id(run_dir: Path) -> str:
    return json.loads((run_dir / IDENTITY_FILE).read_text())["search_id"]


def save_search_id(
    run_dir: Path, search_id: str, identity: dict[str, Any], uri: str, trial_data_bytes: int = 0
) -> None:
    """The id, what a resume must match, the MLflow store (`nli_tune.ui` opens it), and the
    bytes the trials' shared data takes in Ray's object store."""
    saved = {"search_id": search_id, "identity": identity, "mlflow_uri": uri}
    saved["trial_data_bytes"] = trial_data_bytes
    text = json.dumps(saved, indent=2)
    (run_dir / IDENTITY_FILE).write_text(text)


def _brief(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
