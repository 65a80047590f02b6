"""The Ray side of the search: cluster start-up, resource budget, Tuner, exports."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from nli_tune.config import TrainConfig
from nli_tune.errors import UserError
from nli_tune.space import SearchSpace

METRIC, MODE = "cv_macro_f1", "max"


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
        fit = min(fit, math.floor(gpus / gpu_need + 1e-9))
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
    shared: dict,
    run_dir: Path,
    args,
    fingerprint: str,
    env: dict[str, str],
) -> dict[str, Any]:
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from nli_tune.tracking import MlflowTrialCallback, open_parent_run
    from nli_tune.tune_trial import ReleaseWorkerGroups, run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    max_epochs = int(space.value_range("epochs")[1])  # ASHA's max_t; "completed" threshold
    ray = start_ray(args, env)
    try:
        resources = ray.cluster_resources()
        max_concurrent = concurrency(space, resources)
        # First write only now: every check that can fail on the user's input has passed.
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(space.source, run_dir / "space.yaml")
        shared["plan"].save(run_dir / "folds.json")
        print(
            f"cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs -> "
            f"{max_concurrent} trial(s) at a time",
            flush=True,
        )
        search_id = f"{space.name}-{fingerprint[:8]}-{space.seed}"
        exp_id, parent_id = open_parent_run(
            args.mlflow_uri,
            space.name,
            search_id,
            params={
                "num_samples": space.num_samples,
                "folds": space.folds,
                "scheduler": space.scheduler,
                "seed": space.seed,
            },
            tags={"data_fingerprint": fingerprint[:16], "space": str(space.source)},
        )
        mlflow_cb = MlflowTrialCallback(
            args.mlflow_uri,
            exp_id,
            parent_id,
            search_id,
            max_epochs=max_epochs,
            base_config={k: v for k, v in base.to_dict().items() if k != "extra"},
        )
        storage = run_dir / "ray"
        settings = {
            "base_config": space.base_config(),
            "cpus_per_worker": space.cpus_per_worker,
            "gpus_per_worker": space.gpus_per_worker,
            "train_storage": str(storage / "train"),
        }
        # The dict wrapper keeps the ObjectRef a ref: with_parameters would resolve a bare one.
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, shared={"ref": ray.put(shared)}, settings=settings),
            {"cpu": space.driver_cpus},
        )
        exp_path = storage / space.name
        if args.resume:
            tuner = tune.Tuner.restore(
                str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            scheduler = (
                FIFOScheduler()
                if space.scheduler == "none"
                else ASHAScheduler(
                    time_attr="epoch",
                    metric=METRIC,
                    mode=MODE,
                    max_t=max_epochs,
                    grace_period=space.grace_period,
                    reduction_factor=space.reduction_factor,
                )
            )
            searcher = OptunaSearch(
                sampler=optuna.samplers.TPESampler(seed=space.seed),
                metric=METRIC,
                mode=MODE,
                points_to_evaluate=space.points_to_evaluate or None,
            )
            tuner = tune.Tuner(
                trainable,
                param_space=tune_distributions(space),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=space.num_samples,
                    max_concurrent_trials=max_concurrent,
                ),
                run_config=tune.RunConfig(
                    storage_path=str(storage),
                    name=space.name,
                    verbose=1,
                    callbacks=[mlflow_cb, ReleaseWorkerGroups()],
                ),
            )
        grid = tuner.fit()
        _sweep_orphan_placement_groups()
        unfinished = _unfinished_trials(grid, space.num_samples)
        if unfinished:
            raise SearchInterrupted(
                f"search interrupted with {unfinished} trial(s) unfinished; continue it with "
                f"the same command plus --resume"
            )
        return export(grid, space, max_epochs, run_dir, mlflow_cb, fingerprint)
    finally:
        ray.shutdown()


class SearchInterrupted(Exception):
    """Tune stopped before every trial finished (Ctrl-C): nothing is exported."""


def _unfinished_trials(grid, num_samples: int) -> int:
    trials = grid._experiment_analysis.trials  # Tune's own status, not inferred from metrics
    done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    return max(num_samples, len(trials)) - done


def _sweep_orphan_placement_groups() -> None:
    """Trials killed while their worker group was starting can leave placement groups.

    Only this search's own (its Ray job's) groups: on a shared cluster other jobs' groups
    are theirs to keep.
    """
    import ray
    from ray.util.state import list_placement_groups

    from nli_tune.tune_trial import release_placement_group

    job = ray.get_runtime_context().get_job_id()
    try:
        for pg in list_placement_groups(filters=[("state", "!=", "REMOVED")], limit=1000):
            if pg.creator_job_id == job and not pg.is_detached:
                release_placement_group(pg.placement_group_id)
    except Exception as err:  # no dashboard (state API) -> nothing to sweep with
        print(f"note: could not sweep placement groups ({type(err).__name__})")


def export(
    grid, space: SearchSpace, max_epochs: int, run_dir: Path, mlflow_cb, fingerprint: str
) -> dict[str, Any]:
    """cv_results.csv (one row per trial) and best_config.yaml (train consumes it as is)."""
    run_ids = mlflow_cb.trial_runs()
    rows = []
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or Path(result.path).name
        epochs = int(m.get("epoch", 0))
        status = (
            "failed" if result.error else "completed" if epochs >= max_epochs else "stopped early"
        )
        row = {"trial_id": tid, **{k: (result.config or {}).get(k) for k in space.params}}
        row |= {f"fold{k}_macro_f1": m.get(f"fold{k}_macro_f1") for k in range(space.folds)}
        row |= {
            "cv_macro_f1": m.get(METRIC),
            "cv_macro_f1_std": m.get("cv_macro_f1_std"),
            "cv_roc_auc": m.get("cv_roc_auc"),
            "epochs": epochs,
            "status": status,
            "mlflow_run_id": run_ids.get(tid, ""),
        }
        rows.append((row, result))
    table = pd.DataFrame([r for r, _ in rows])
    # "cv_rank", not "rank": `rank` is also a searchable param (the DoRA rank).
    table["cv_rank"] = table["cv_macro_f1"].rank(ascending=False, method="min")
    table = table.sort_values(["cv_rank", "trial_id"], na_position="last")
    table.to_csv(run_dir / "cv_results.csv", index=False)

    ranked = [(r, res) for r, res in rows if r["cv_macro_f1"] is not None and not res.error]
    if not ranked:
        raise UserError(f"every trial failed; see the trial logs under {run_dir / 'ray'}")
    best_row, best = max(ranked, key=lambda x: x[0]["cv_macro_f1"])
    params = {k: _plain(best.config[k]) for k in space.params}
    cfg = TrainConfig.from_dict(space.base_config() | params)
    search_meta = {
        "space": space.name,
        "trial_id": best_row["trial_id"],
        "cv_macro_f1": float(best_row["cv_macro_f1"]),
        "cv_macro_f1_std": float(best_row["cv_macro_f1_std"]),
        "fold_macro_f1": [float(best_row[f"fold{k}_macro_f1"]) for k in range(space.folds)],
        "epochs_run": int(best_row["epochs"]),
        "seed": space.seed,
        "data_fingerprint": fingerprint[:16],
        "mlflow_parent_run_id": mlflow_cb.parent_id,
        "mlflow_run_id": best_row["mlflow_run_id"],
    }
    cfg.save(run_dir / "best_config.yaml", metadata={"search": search_meta})
    client = mlflow_cb.client
    client.log_artifact(mlflow_cb.parent_id, str(space.source))
    client.log_artifact(mlflow_cb.parent_id, str(run_dir / "best_config.yaml"))
    client.log_artifact(mlflow_cb.parent_id, str(run_dir / "cv_results.csv"))
    client.log_metric(mlflow_cb.parent_id, "best_cv_macro_f1", search_meta["cv_macro_f1"])
    client.set_terminated(mlflow_cb.parent_id, "FINISHED")
    return {"params": params} | search_meta


def _plain(value):
    return value.item() if hasattr(value, "item") else value
