"""A finished search's files: cv_results.csv (one row per trial, the confirmation reruns
included), epochs.csv, and best_config.yaml (`train` consumes it as is), plus the parent
MLflow run's headline numbers. Which config is exported: study/selection.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError
from nli_tune.study.run_files import (
    EPOCHS_FILE,
    FAILED,
    FOLDS_FILE,
    RESULTS_FILE,
    STOPPED,
    epoch_status,
)
from nli_tune.study.selection import CONFIRMATION, SEARCH, rank_configs
from nli_tune.study.space import CONFIRMS_KEY, METRICS, REPEAT_KEY, SearchSpace, fold_column

# Per-fold columns of cv_results.csv besides each metric's: a fit's seed and whether it
# learned (training/learned.py), with the two numbers the rule read.
FOLD_FIT_COLUMNS = ("macro_f1", "seed", "learned", "loss_ratio", "calib_roc_auc_within")


def trial_rows(grid, space: SearchSpace, run_ids: dict[str, str], clock, stage: str):
    """(cv_results row, epochs.csv frame) of every trial of a Tune ResultGrid."""
    from nli_tune.tuning.trial import failure_line

    base_epochs = space.trial_config({}).epochs
    rows, history = [], []
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or Path(result.path).name
        epochs, config = int(m.get("epoch", 0)), result.config or {}
        status = FAILED if result.error else epoch_status(epochs, config, base_epochs)
        row = {"trial_id": tid, **{k: config.get(k) for k in space.params}}
        row |= {"stage": stage, "confirms": config.get(CONFIRMS_KEY, "")}
        row["repeat"] = int(config.get(REPEAT_KEY, 0))
        folds = range(space.folds)
        row |= {f"fold{k}_{c}": m.get(f"fold{k}_{c}") for c in FOLD_FIT_COLUMNS for k in folds}
        for k in folds:  # Tune's metrics are floats; a seed reads back as the integer it is
            seed = row[f"fold{k}_seed"]
            row[f"fold{k}_seed"] = None if seed is None or seed != seed else int(seed)
        for metric in dict.fromkeys((space.searcher_metric, space.scheduler_metric)):
            row |= {fold_column(metric, k): m.get(fold_column(metric, k)) for k in folds}
        row |= {"cv_macro_f1_std": m.get("cv_macro_f1_std"), "fits_failed": m.get("fits_failed")}
        row |= {name: m.get(name) for name in METRICS}
        row["cv_evidence_hit_at_1"] = m.get("cv_evidence_hit_at_1")
        row |= {"epochs": epochs, "status": status, "mlflow_run_id": run_ids.get(tid, "")}
        row["error"] = failure_line(str(result.error)) if result.error else ""
        row |= _trial_seconds(clock.wall_s(tid) if clock else None, m.get("compute_s"))
        row |= {k: m.get(k) for k in ("worker_peak_rss_mb", "worker_tokens_per_s")}
        row |= {k: v for k, v in m.items() if k.startswith("cv_f1_")}
        rows.append(row)
        history.append(_epoch_history(result, tid, space.folds))
    return rows, history


def export(
    rows: list[dict], history: list, space: SearchSpace, run_dir: Path, mlflow_cb, fingerprint
) -> dict[str, Any]:
    """Write cv_results.csv, epochs.csv and best_config.yaml; returns the best's summary."""
    from nli_tune.tracking.runs import absolute_uri

    metric, folds = space.searcher_metric, range(space.folds)  # the best is chosen by it
    table = pd.DataFrame(rows)
    # "cv_rank", not "rank": `rank` is also a searchable param (the DoRA rank). Search
    # trials are ranked by the searcher's metric at their last scored epoch; the exported
    # best is chosen at equal epochs on every fit of a config (study/selection.py).
    searched = table["stage"] == SEARCH
    table["cv_rank"] = table[metric].where(searched).rank(ascending=False, method="min")
    table = table.sort_values(["stage", "cv_rank", "trial_id"], ascending=[False, True, True])
    table.to_csv(run_dir / RESULTS_FILE, index=False, na_rep="")
    pd.concat(history, ignore_index=True).to_csv(run_dir / EPOCHS_FILE, index=False)

    ranked = rank_configs(table, metric, space.folds)
    if ranked.empty:
        raise UserError(
            f"no trial of {space.name} ran all its epochs (all failed or were stopped); see "
            f"the trial logs under {run_dir / 'ray'}"
        )
    choice = ranked.iloc[0]
    best_row = table[table["trial_id"] == choice["config"]].iloc[0]
    params = {k: _plain(best_row[k]) for k in space.params}
    cfg = TrainConfig.from_dict(space.base_config() | params)
    runs = table[(table["trial_id"] == choice["config"]) | (table["confirms"] == choice["config"])]
    search_meta = {
        "space": space.name,
        "trial_id": best_row["trial_id"],
        # The searcher's metric at equal (full) epochs, averaged over every fit of the
        # config: its trial's folds and its confirmation reruns' (new seeds, same folds).
        "selected_by": metric,
        metric: float(choice["mean"]),
        f"{metric}_std": float(choice["std"]),
        "fits": int(choice["fits"]),
        "fits_failed": int(choice["fits_failed"]),
        "runs": list(runs["trial_id"]),
        fold_column(metric, ""): [float(best_row[fold_column(metric, k)]) for k in folds],
        "cv_macro_f1": float(best_row["cv_macro_f1"]),
        "cv_macro_f1_std": float(best_row["cv_macro_f1_std"]),
        "fold_macro_f1": [float(best_row[f"fold{k}_macro_f1"]) for k in folds],
        "epochs_run": int(best_row["epochs"]),
        "seed": space.seed,
        "data_fingerprint": fingerprint[:16],
        # train tests on exactly these held-out posts (and refuses a split that mixes them)
        "folds_file": str((run_dir / FOLDS_FILE).resolve()),
        "mlflow_uri": absolute_uri(mlflow_cb.uri),
        "mlflow_parent_run_id": mlflow_cb.parent_id,
        "mlflow_run_id": best_row["mlflow_run_id"],
    }
    if not choice["eligible"]:
        print(
            f"warning: every completed config has a fit that did not learn; exporting "
            f"{best_row['trial_id']} ({choice['fits_failed']} of {choice['fits']} fits "
            f"failed): widen or lower the lr range",
            flush=True,
        )
    cfg.save(run_dir / "best_config.yaml", metadata={"search": search_meta})
    _log_parent(mlflow_cb, space, run_dir, table, search_meta)
    return {"params": params, "mlflow_offline": mlflow_cb.offline} | search_meta


def _log_parent(mlflow_cb, space: SearchSpace, run_dir: Path, table, search_meta) -> None:
    outputs = (run_dir / f for f in ("best_config.yaml", RESULTS_FILE, EPOCHS_FILE))
    for path in (Path(space.source), *outputs):  # absolute: a replay may run from elsewhere
        mlflow_cb.write({"kind": "parent_artifact", "path": str(path.resolve())})
    metric = search_meta["selected_by"]
    headline = {f"best_{key}": search_meta[key] for key in dict.fromkeys((metric, "cv_macro_f1"))}
    searched = table[table["stage"] == SEARCH]
    counts = searched["status"].value_counts()  # the runs table shows them on the parent's row
    headline |= {"trials": len(searched), "trials_stopped": counts.get(STOPPED, 0)}
    headline |= {"trials_failed": counts.get(FAILED, 0)}
    headline |= {"confirmation_trials": int((table["stage"] == CONFIRMATION).sum())}
    headline |= {"best_fits_failed": search_meta["fits_failed"]}
    for key, value in headline.items():
        mlflow_cb.write({"kind": "parent_metric", "key": key, "value": float(value)})
    mlflow_cb.write({"kind": "parent_end", "status": "FINISHED"})


def _trial_seconds(wall: float | None, compute: float | None) -> dict[str, float | None]:
    """A trial's wall time, its folds' compute time and the rest: its overhead (actors and
    workers starting, imports, model load, hand-offs, waits for Tune, teardown)."""
    overhead = wall - compute if wall is not None and compute is not None else None
    return {"wall_s": wall, "compute_s": compute, "overhead_s": overhead}


def _epoch_history(result, trial_id: str, folds: int) -> pd.DataFrame:
    """One row per epoch a trial reported, i.e. scored (the rungs and its last): every
    candidate metric across folds and per fold, what ASHA judged it on among them."""
    cols = ["epoch", *METRICS, "cv_macro_f1_std", "epoch_compute_s"]
    cols += [fold_column(name, k) for name in METRICS for k in range(folds)]
    frame = result.metrics_dataframe
    if frame is None or frame.empty or "epoch" not in frame:
        return pd.DataFrame(columns=["trial_id", *cols])
    frame = frame.reindex(columns=cols).dropna(subset=["epoch"])
    frame = frame.drop_duplicates("epoch", keep="last")  # a resumed trial re-reports one
    return frame.assign(trial_id=trial_id, epoch=frame["epoch"].astype(int))[["trial_id", *cols]]


def _plain(value):
    return value.item() if hasattr(value, "item") else value
