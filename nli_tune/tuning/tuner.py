"""The Ray side of the search: cluster start-up, resource budget, Tuner, exports."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError, first_line
from nli_tune.study.run_files import (
    FOLDS_FILE,
    PENDING_FILE,
    STUDY_FILE,
    resolve_search_id,
    save_search_id,
)
from nli_tune.study.space import SearchSpace

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
        shared = {"ref": ray.put(data)}  # in Ray's object store once, for every trial
        trainable = _trainable(tune, space, shared, storage, space.judged_rungs())
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
        callbacks = [mlflow_cb, ReleaseWorkerGroups(), clock, *progress]
        if args.resume:
            tuner = _restore(tune, f"{storage}/{space.name}", trainable)
        else:
            tuner = _new_tuner(tune, space, trainable, run_dir, storage, max_concurrent, callbacks)
        # Confirmation trials score their folds at their last epoch only (no rungs).
        stage = Stage(tune, _trainable(tune, space, shared, storage, []), storage, max_concurrent)
        stage.callbacks = [mlflow_cb, ReleaseWorkerGroups(), clock]
        if not args.quiet:  # one line per confirmation trial event, numbered among them
            stage.progress = lambda n: ProgressLines(
                n, list(space.params), base.epochs, space.searcher_metric
            )
        return _fit_and_export(tuner, space, run_dir, mlflow_cb, fingerprint, clock, stage)
    finally:
        ray.shutdown()


def _open_run(space, base, data, run_dir, args, search_id, identity, fingerprint):
    """The MLflow parent run, then the run folder's first files (every check on the user's
    input has passed by now); returns the MLflow Tune callback."""
    from nli_tune.tracking.runs import absolute_uri, open_search_run
    from nli_tune.tuning.mlflow_callback import MlflowTrialCallback

    exp_id, parent_id = open_search_run(args.mlflow_uri, space, search_id, fingerprint)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The space as it ran: the file with any command-line overrides applied.
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space.effective, sort_keys=False))
    data.plan.save(run_dir / FOLDS_FILE)
    save_search_id(run_dir, search_id, identity, absolute_uri(args.mlflow_uri), data.nbytes())
    return MlflowTrialCallback(
        args.mlflow_uri,
        exp_id,
        parent_id,
        search_id,
        base_config={k: v for k, v in base.to_dict().items() if k != "extra"},
        pending=run_dir / PENDING_FILE,  # where records wait while MLflow is unreachable
    )


def _trainable(tune, space: SearchSpace, shared: dict, storage: str, rungs: list[int] | None):
    """run_trial with the shared data (its ObjectRef in Ray's object store), its settings,
    the epochs its folds score at besides the last (`rungs`; None: every epoch) and its
    driver's CPUs."""
    from nli_tune.tuning.trial import TrialSettings, run_trial

    settings = TrialSettings(
        base_config=space.base_config(),
        cpus_per_worker=space.cpus_per_worker,
        worker_threads=space.worker_threads,
        gpus_per_worker=space.gpus_per_worker,
        train_storage=f"{storage}/train",
        rungs=rungs,
    )
    # The dict wrapper keeps the ObjectRef a ref: with_parameters would resolve a bare one.
    return tune.with_resources(
        tune.with_parameters(run_trial, shared=shared, settings=settings),
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


class Stage:
    """What the confirmation stage runs with: its trainable, storage, concurrency and
    callbacks (the search's MLflow callback and clock among them)."""

    def __init__(self, tune, trainable, storage: str, at_once: int):
        self.tune, self.trainable, self.storage, self.at_once = tune, trainable, storage, at_once
        self.callbacks: list = []
        self.progress = None  # n trials -> their progress-lines callback; None: quiet


def _fit_and_export(tuner, space, run_dir: Path, mlflow_cb, fingerprint: str, clock, stage):
    """Run the trials, then the confirmation stage; export them, or say how many a Ctrl-C
    left unfinished."""
    from nli_tune.study.selection import CONFIRMATION, SEARCH, confirmation_candidates
    from nli_tune.tuning.driver_callbacks import sweep_orphan_placement_groups
    from nli_tune.tuning.export import export, trial_rows

    try:
        grid = tuner.fit()
        sweep_orphan_placement_groups()
        _check_finished(grid, space.num_samples, mlflow_cb)
        rows, history = trial_rows(grid, space, mlflow_cb.trial_runs(), clock, SEARCH)
        if space.confirm_top:
            top = confirmation_candidates(
                pd.DataFrame(rows), space.searcher_metric, space.confirm_top
            )
            grid = _confirm(space, stage, rows, top, mlflow_cb)
            more, more_history = trial_rows(
                grid, space, mlflow_cb.trial_runs(), clock, CONFIRMATION
            )
            rows, history = rows + more, history + more_history
        return export(rows, history, space, run_dir, mlflow_cb, fingerprint)
    except SearchInterrupted:
        raise  # the parent run stays RUNNING: --resume continues it
    except BaseException:
        try:
            mlflow_cb.write({"kind": "parent_end", "status": "FAILED"})
        except Exception:
            pass  # the search's own error is the one to show
        raise


def _confirm(space: SearchSpace, stage: Stage, rows, top: list[str], mlflow_cb):
    """Run (or, after a Ctrl-C, continue) the confirmation trials of the `top` trials."""
    from nli_tune.tuning.confirm import confirmation_name, confirmation_points, confirmation_tuner

    if not top:
        print(
            "confirmation: no completed config whose fits all learned, nothing to rerun",
            flush=True,
        )
        return []
    points = confirmation_points(space, rows, top)
    path = f"{stage.storage}/{confirmation_name(space)}"
    print(
        f"confirmation: the top {len(top)} completed configs ({', '.join(top)}) again with "
        f"{space.confirm_seeds} new seed(s) each: {len(points)} trials at full epochs",
        flush=True,
    )
    tune = stage.tune
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(
            path, trainable=stage.trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        callbacks = stage.callbacks + ([stage.progress(len(points))] if stage.progress else [])
        tuner = confirmation_tuner(
            tune, space, tune_distributions(space), stage.trainable, points, stage.storage,
            stage.at_once, callbacks,
        )  # fmt: skip
    grid = tuner.fit()
    _check_finished(grid, len(points), mlflow_cb)
    return grid


def _check_finished(grid, num_samples: int, mlflow_cb) -> None:
    unfinished = _unfinished_trials(grid, num_samples, mlflow_cb.ended_trials())
    if unfinished:
        raise SearchInterrupted(
            f"search interrupted with {unfinished} trial(s) unfinished; continue it "
            f"with the same command plus --resume"
        )


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
