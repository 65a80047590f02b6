"""The Ray side of the search: cluster start-up, resource budget, Tuner, exports."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError, first_line
from nli_tune.study.run_files import (
    EPOCHS_FILE,
    FAILED,
    PENDING_FILE,
    RESULTS_FILE,
    STOPPED,
    STUDY_FILE,
    epoch_status,
    resolve_search_id,
    save_search_id,
)
from nli_tune.study.space import SearchSpace, fold_column

if TYPE_CHECKING:  # the search entry builds it; this module loads no torch at import
    from nli_tune.tuning.prepare import TrialData


def start_ray(args, env: dict[str, str]):
    import ray

    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if args.address:
        ctx = ray.init(address=args.address, **kwargs)
    else:
        ctx = ray.init(
            address="local",  # a fresh local Ray, even if a `ray start` cluster runs here
            num_cpus=os.cpu_count(),
            include_dashboard=not args.no_dashboard,
            dashboard_host="127.0.0.1",
            **kwargs,
        )
    url = ctx.dashboard_url
    if url:
        print(
            f"Ray dashboard: http://{url}  (token authentication on: the browser asks for "
            f"the token in ~/.ray/auth_token)",
            flush=True,
        )
    else:
        print("Ray dashboard: off", flush=True)
    return ray


def concurrency(space: SearchSpace, resources: dict[str, float]) -> int:
    """Trials that fit at once, each needing its driver's share plus K fold workers, so
    drivers can never hold the CPUs (or GPUs) their workers wait for."""
    cpu_need = space.driver_cpus + space.folds * space.cpus_per_worker
    gpu_need = space.folds * space.gpus_per_worker
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fit = math.floor(cpus / cpu_need + 1e-9)
    if gpu_need:
        share = space.gpus_per_worker
        if share < 1:  # fractional shares pack per GPU: at 0.4 a GPU holds 2 workers, not 2.5
            slots = math.floor(gpus + 1e-9) * math.floor(1 / share + 1e-9)
        else:
            slots = gpus // share
        fit = min(fit, int(slots // space.folds))
    if fit < 1:
        raise UserError(
            f"{space.source}: one trial needs {cpu_need:g} CPUs and {gpu_need:g} GPUs "
            f"(driver {space.driver_cpus:g} + {space.folds} folds x {space.cpus_per_worker:g} "
            f"CPU / {space.gpus_per_worker:g} GPU) but the cluster has {cpus:g} CPUs and "
            f"{gpus:g} GPUs: lower resources.cpus_per_worker / gpus_per_worker or folds"
        )
    return fit


def tune_distributions(space: SearchSpace) -> dict[str, Any]:
    from ray import tune

    makers = {
        "choice": lambda a: tune.choice(a),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
        "quniform": lambda a: tune.quniform(*a),
        "qrandint": lambda a: tune.qrandint(*a),
    }
    return {
        key: makers[kind](args) for key, dist in space.params.items() for kind, args in dist.items()
    }


def run_search(
    space: SearchSpace,
    base: TrainConfig,
    data: TrialData,
    run_dir: Path,
    args,
    fingerprint: str,
    env: dict[str, str],
) -> dict[str, Any]:
    """Start (or join) Ray, open the run folder and MLflow run, run every trial through
    Tune and export the results; returns the best trial's summary."""
    import optuna
    from ray import tune

    from nli_tune.tuning.driver_callbacks import ReleaseWorkerGroups, TrialClock
    from nli_tune.tuning.progress import ProgressLines

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search_id, identity = resolve_search_id(space, fingerprint, run_dir, args.resume)
    t0 = time.time()
    ray = start_ray(args, env)
    if not args.quiet:
        print(f"Ray started in {time.time() - t0:.0f}s", flush=True)
    try:
        resources = ray.cluster_resources()
        max_concurrent = concurrency(space, resources)
        mlflow_cb = _open_run(space, base, data, run_dir, args, search_id, identity, fingerprint)
        print(
            f"cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs -> "
            f"{max_concurrent} trial(s) at a time",
            flush=True,
        )
        storage = args.storage.rstrip("/")  # a local path or a URI such as s3://bucket/x
        trainable = _trainable(tune, ray, space, data, storage)
        clock = TrialClock()  # the trials' wall time, for their overhead in cv_results.csv
        lines = ProgressLines(
            space.num_samples, list(space.params), base.epochs, space.scheduler_metric
        )
        progress = [] if args.quiet else [lines]  # one line per trial event
        # A trial restarted on another node, or resumed, re-reports its restored epoch (see
        # tuning.trial.fold_worker); Optuna keeps the first, equal, value and warns.
        warnings.filterwarnings(
            "ignore", r"The reported value is ignored because this `step=", UserWarning
        )
        if args.resume:
            tuner = _restore(tune, f"{storage}/{space.name}", trainable)
        else:
            callbacks = [mlflow_cb, ReleaseWorkerGroups(), clock, *progress]
            tuner = _new_tuner(tune, space, trainable, run_dir, storage, max_concurrent, callbacks)
        return _fit_and_export(tuner, space, run_dir, mlflow_cb, fingerprint, clock)
    finally:
        ray.shutdown()


def _open_run(space, base, data, run_dir, args, search_id, identity, fingerprint):
    """The MLflow parent run, then the run folder's first files (every check on the user's
    input has passed by now); returns the MLflow Tune callback."""
    from nli_tune.tracking.runs import absolute_uri, open_search_run
    from nli_tune.tuning.mlflow_callback import MlflowTrialCallback

    exp_id, parent_id = open_search_run(args.mlflow_uri, space, search_id, fingerprint)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(space.source, run_dir / "space.yaml")
    data.plan.save(run_dir / "folds.json")
    save_search_id(run_dir, search_id, identity, absolute_uri(args.mlflow_uri))
    return MlflowTrialCallback(
        args.mlflow_uri,
        exp_id,
        parent_id,
        search_id,
        base_config={k: v for k, v in base.to_dict().items() if k != "extra"},
        pending=run_dir / PENDING_FILE,  # where records wait while MLflow is unreachable
    )


def _trainable(tune, ray, space: SearchSpace, data: TrialData, storage: str):
    """run_trial with the shared data (in Ray's object store), its settings and its
    driver's CPUs."""
    from nli_tune.tuning.trial import TrialSettings, run_trial

    settings = TrialSettings(
        base_config=space.base_config(),
        cpus_per_worker=space.cpus_per_worker,
        worker_threads=space.worker_threads,
        gpus_per_worker=space.gpus_per_worker,
        train_storage=f"{storage}/train",
        rungs=space.judged_rungs(),  # where the folds score (None: every epoch)
    )
    # The dict wrapper keeps the ObjectRef a ref: with_parameters would resolve a bare one.
    return tune.with_resources(
        tune.with_parameters(run_trial, shared={"ref": ray.put(data)}, settings=settings),
        {"cpu": space.driver_cpus},
    )


def _new_tuner(tune, space, trainable, run_dir: Path, storage: str, max_concurrent, callbacks):
    """A fresh search's Tuner: Optuna's searcher (its study in the run folder) and ASHA."""
    from nli_tune.tuning.optuna_search import make_scheduler, make_searcher

    scheduler = make_scheduler(space, int(space.value_range("epochs")[1]))  # max_t
    # A fresh search's study starts empty (one left by a search whose Tune state was in
    # another --storage would otherwise be continued).
    (run_dir / STUDY_FILE).unlink(missing_ok=True)
    searcher = make_searcher(space, run_dir / STUDY_FILE)  # for optuna-dashboard
    return tune.Tuner(
        trainable,
        param_space=tune_distributions(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=space.num_samples,
            max_concurrent_trials=max_concurrent,
            # Not reuse_actors, though it saves ~2.8 s between trials here: Tune then
            # parks an ASHA-stopped trial's actor, its thread blocked in tune.report,
            # until another trial takes it over. Its Train controller can outlive
            # ReleaseWorkerGroups' delay and replace the group freed under it, and the
            # next trial fails if the abort takes over 2 s (Tune's reset timeout).
        ),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=space.name,
            verbose=0,  # ProgressLines (in callbacks): one line per trial event instead
            # A trial whose driver is lost (its node died) restarts and continues
            # from its folds' last checkpoint; Ray Train retries fold workers itself.
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=callbacks,
        ),
    )


def _fit_and_export(tuner, space, run_dir: Path, mlflow_cb, fingerprint: str, clock):
    """Run the trials; export them, or say how many a Ctrl-C left unfinished."""
    from nli_tune.tuning.driver_callbacks import sweep_orphan_placement_groups

    try:
        grid = tuner.fit()
        sweep_orphan_placement_groups()
        unfinished = _unfinished_trials(grid, space.num_samples, mlflow_cb.ended_trials())
        if unfinished:
            raise SearchInterrupted(
                f"search interrupted with {unfinished} trial(s) unfinished; continue it "
                f"with the same command plus --resume"
            )
        return export(grid, space, run_dir, mlflow_cb, fingerprint, clock)
    except SearchInterrupted:
        raise  # the parent run stays RUNNING: --resume continues it
    except BaseException:
        try:
            mlflow_cb.write({"kind": "parent_end", "status": "FAILED"})
        except Exception:
            pass  # the search's own error is the one to show
        raise


def _restore(tune, exp_path: str, trainable):
    """Tune's saved state holds our searcher and callbacks by module path; a search that an
    nli_tune from before the package layout (nli_tune.tune_optuna, ...) started cannot be
    unpickled by this one: say so in a line instead of Tune's traceback."""
    try:
        return tune.Tuner.restore(
            exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    except (ModuleNotFoundError, AttributeError) as err:
        if "nli_tune" not in str(err):
            raise
        raise UserError(
            f"--resume: {exp_path} was written by an older nli_tune ({first_line(err)}); "
            f"finish it with that version, or start this search again with another --output"
        ) from None


class SearchInterrupted(Exception):
    """Tune stopped before every trial finished (Ctrl-C): nothing is exported."""


def _unfinished_trials(grid, num_samples: int, ended: set[str]) -> int:
    """Trials not yet created plus those a Ctrl-C cut off. Tune's own statuses cannot tell
    the latter: its clean-up marks every running trial TERMINATED."""
    trials = grid._experiment_analysis.trials
    done = sum(t.trial_id in ended for t in trials)
    return max(num_samples, len(trials)) - done


def export(
    grid, space: SearchSpace, run_dir: Path, mlflow_cb, fingerprint: str, clock=None
) -> dict[str, Any]:
    """cv_results.csv (one row per trial) and best_config.yaml (train consumes it as is)."""
    from nli_tune.tracking.runs import absolute_uri
    from nli_tune.tuning.trial import failure_line

    run_ids = mlflow_cb.trial_runs()
    base_epochs = space.trial_config({}).epochs
    metric, folds = space.searcher_metric, range(space.folds)  # the best is chosen by it
    rows, history = [], []
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or Path(result.path).name
        epochs, config = int(m.get("epoch", 0)), result.config or {}
        status = FAILED if result.error else epoch_status(epochs, config, base_epochs)
        row = {"trial_id": tid, **{k: config.get(k) for k in space.params}}
        row |= {f"fold{k}_macro_f1": m.get(f"fold{k}_macro_f1") for k in folds}
        row |= {fold_column(metric, k): m.get(fold_column(metric, k)) for k in folds}
        row |= {
            "cv_macro_f1": m.get("cv_macro_f1"),
            "cv_macro_f1_std": m.get("cv_macro_f1_std"),
            "cv_roc_auc": m.get("cv_roc_auc"),
            "cv_roc_auc_within": m.get("cv_roc_auc_within"),
            "cv_pr_auc": m.get("cv_pr_auc"),
            "cv_evidence_hit_at_1": m.get("cv_evidence_hit_at_1"),
            "epochs": epochs,
            "status": status,
            "mlflow_run_id": run_ids.get(tid, ""),
            "error": failure_line(str(result.error)) if result.error else "",
        }
        row |= _trial_seconds(clock.wall_s(tid) if clock else None, m.get("compute_s"))
        row |= {k: m.get(k) for k in ("worker_peak_rss_mb", "worker_tokens_per_s")}
        row |= {k: v for k, v in m.items() if k.startswith("cv_f1_")}
        rows.append((row, result))
        history.append(_epoch_history(result, tid, space.folds))
    table = pd.DataFrame([r for r, _ in rows])
    # "cv_rank", not "rank": `rank` is also a searchable param (the DoRA rank). Trials are
    # ranked by the searcher's metric at their last scored epoch; the report says where
    # that compares trials stopped at different epochs.
    table["cv_rank"] = table[metric].rank(ascending=False, method="min")
    table = table.sort_values(["cv_rank", "trial_id"], na_position="last")
    table.to_csv(run_dir / RESULTS_FILE, index=False)
    pd.concat(history, ignore_index=True).to_csv(run_dir / EPOCHS_FILE, index=False)

    ranked = [(r, res) for r, res in rows if _finite(r[metric]) and not res.error]
    if not ranked:
        raise UserError(f"every trial failed; see the trial logs under {grid.experiment_path}")
    best_row, best = max(ranked, key=lambda x: x[0][metric])
    params = {k: _plain(best.config[k]) for k in space.params}
    cfg = TrainConfig.from_dict(space.base_config() | params)
    search_meta = {
        "space": space.name,
        "trial_id": best_row["trial_id"],
        "selected_by": metric,  # the searcher's metric, at the trial's last scored epoch
        metric: float(best_row[metric]),
        fold_column(metric, ""): [float(best_row[fold_column(metric, k)]) for k in folds],
        "cv_macro_f1": float(best_row["cv_macro_f1"]),
        "cv_macro_f1_std": float(best_row["cv_macro_f1_std"]),
        "fold_macro_f1": [float(best_row[f"fold{k}_macro_f1"]) for k in folds],
        "epochs_run": int(best_row["epochs"]),
        "seed": space.seed,
        "data_fingerprint": fingerprint[:16],
        "mlflow_uri": absolute_uri(mlflow_cb.uri),
        "mlflow_parent_run_id": mlflow_cb.parent_id,
        "mlflow_run_id": best_row["mlflow_run_id"],
    }
    cfg.save(run_dir / "best_config.yaml", metadata={"search": search_meta})
    outputs = (run_dir / f for f in ("best_config.yaml", RESULTS_FILE, EPOCHS_FILE))
    for path in (Path(space.source), *outputs):  # absolute: a replay may run from elsewhere
        mlflow_cb.write({"kind": "parent_artifact", "path": str(path.resolve())})
    headline = {f"best_{key}": search_meta[key] for key in dict.fromkeys((metric, "cv_macro_f1"))}
    counts = table["status"].value_counts()  # the runs table shows them on the parent's row
    headline |= {"trials": len(table), "trials_stopped": counts.get(STOPPED, 0)}
    headline |= {"trials_failed": counts.get(FAILED, 0)}
    for key, value in headline.items():
        mlflow_cb.write({"kind": "parent_metric", "key": key, "value": float(value)})
    mlflow_cb.write({"kind": "parent_end", "status": "FINISHED"})
    return {"params": params, "mlflow_offline": mlflow_cb.offline} | search_meta


def _trial_seconds(wall: float | None, compute: float | None) -> dict[str, float | None]:
    """A trial's wall time, its folds' compute time and the rest: its overhead (actors and
    workers starting, imports, model load, hand-offs, waits for Tune, teardown)."""
    overhead = wall - compute if wall is not None and compute is not None else None
    return {"wall_s": wall, "compute_s": compute, "overhead_s": overhead}


def _epoch_history(result, trial_id: str, folds: int) -> pd.DataFrame:
    """One row per epoch a trial reported, i.e. scored (the rungs and its last): every
    candidate metric across folds and per fold, what ASHA judged it on among them."""
    from nli_tune.study.space import METRICS

    cols = ["epoch", *METRICS, "cv_macro_f1_std", "epoch_compute_s"]
    cols += [fold_column(name, k) for name in METRICS for k in range(folds)]
    frame = result.metrics_dataframe
    if frame is None or frame.empty or "epoch" not in frame:
        return pd.DataFrame(columns=["trial_id", *cols])
    frame = frame.reindex(columns=cols).dropna(subset=["epoch"])
    frame = frame.drop_duplicates("epoch", keep="last")  # a resumed trial re-reports one
    return frame.assign(trial_id=trial_id, epoch=frame["epoch"].astype(int))[["trial_id", *cols]]


def _finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def _plain(value):
    return value.item() if hasattr(value, "item") else value
