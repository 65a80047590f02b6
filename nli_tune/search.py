"""Distributed search: Optuna samples trial configs, ASHA prunes on the cross-fold mean.

    python -m nli_tune.search --space search_spaces/pooling.yaml

Each trial is a Ray Train TorchTrainer with K workers, one post-grouped CV fold each.
Writes outputs/<name>/best_config.yaml (feed it to `python -m nli_tune.train --config`)
and outputs/<name>/cv_results.csv, and logs a parent MLflow run with one nested run per
trial. Everything is validated before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from nli_tune.core.errors import UserError, first_line, run_cli
from nli_tune.core.overrides import parse_overrides
from nli_tune.redsm5.folds import make_folds
from nli_tune.redsm5.load import load_redsm5
from nli_tune.study.run_files import ENSEMBLE_DIR, PENDING_FILE, STUDY_FILE
from nli_tune.study.space import SearchSpace, load_space

# Ray Train/Tune settings for short, many-epoch trials (read by the driver, controller and
# workers): poll reports fast, snapshot Tune state often so --resume loses little, and
# fail a worker group that cannot start instead of retrying forever.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
    "TOKENIZERS_PARALLELISM": "false",
    # Tune's legacy reporter prints nothing at verbose=0; the new one prints a start-up box
    # and a TensorBoard hint above our progress lines whatever the verbosity.
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Only where the search starts its own local Ray: no node of it can be preempted, so Ray
# Train's preemption watcher (one more process per trial, about 2 CPU-s) has nothing to watch.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# MLflow's HTTP client retries a dead server for minutes by default, while Tune (and so
# every fold worker) waits on the callback: fail within seconds and queue the records.
MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def worker_env(address: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables every trial and worker gets (runtime_env). What the environment
    already sets wins (e.g. a longer start-up timeout), as runtime_env would otherwise
    overwrite it; NLI_TUNE_* variables reach the workers too, on any cluster; the local
    settings only where the search starts its own Ray (no address)."""
    defaults = RAY_ENV | ({} if address else LOCAL_RAY_ENV)
    return {key: environ.get(key, value) for key, value in defaults.items()} | {
        key: value for key, value in environ.items() if key.startswith("NLI_TUNE_")
    }


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.search",
        description="Search fine-tuning setups with Ray Tune + Optuna; each trial trains K "
        "post-grouped CV folds in parallel (Ray Train) and ASHA stops weak trials "
        "at its rungs on the space's metric (a cross-fold mean; the folds score "
        "validation only at the rungs and the last epoch). Writes OUTPUT/<name>/best_config.yaml "
        "cv_results.csv, epochs.csv and report.html and logs every trial to MLflow.",
    )
    p.add_argument(
        "--space",
        required=True,
        help="search-space YAML: a path or a bundled name (pooling, smoke, full, gpu)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="over the space file, parsed as YAML: a setting (num_samples=4), a section's "
        "key (asha.grace_period=2, confirm.top=1) or a training key, which is fixed for "
        "every trial (epochs=2, adapt_layers=9); the earlier project's names "
        "(training.learning_rate, ...) are aliases. --resume needs the same ones",
    )
    p.add_argument("--data-dir", help="ReDSM5 folder (default: the bundled synthetic sample)")
    p.add_argument(
        "--output",
        default="outputs",
        help="folder for results; the search writes OUTPUT/<name>/ (default outputs)",
    )
    p.add_argument(
        "--storage",
        help="where Ray Tune and Train keep trial state and fold checkpoints (default "
        "OUTPUT/<name>/ray). On a multi-node cluster every node must reach it: "
        "s3://bucket/prefix or a shared (NFS) path",
    )
    p.add_argument("--num-samples", type=int, help="number of trials (overrides the space)")
    p.add_argument("--folds", type=int, help="CV folds = workers per trial (overrides the space)")
    p.add_argument(
        "--seed", type=int, help="seed for Optuna and for the data splits (overrides the space)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted search in OUTPUT/<name>: finished trials are "
        "kept, MLflow runs are continued, not duplicated; records kept while MLflow was "
        "unreachable are replayed first (the only step left if the search had finished)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address, e.g. 'auto' on a `ray up` cluster "
        "(default: start a local Ray for this command)",
    )
    p.add_argument(
        "--mlflow-uri",
        default="sqlite:///mlflow.db",
        help="MLflow tracking URI (default sqlite:///mlflow.db in this folder)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines (trial starts, epochs, ends; timings of long steps)",
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="skip OUTPUT/<name>/report.html (`python -m nli_tune.report` writes it later)",
    )
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not start the Ray dashboard (local Ray only)",
    )
    return p.parse_args(argv)


def prepare(args) -> tuple[SearchSpace, Path]:
    """Validate everything that can be checked without Ray; return the space and run dir."""
    space = load_space(args.space, parse_overrides(args.overrides))
    for flag, value, low in (("--num-samples", args.num_samples, 1), ("--folds", args.folds, 2)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: must be >= {low}")
    if args.num_samples:
        space.num_samples = args.num_samples
    if args.folds:
        space.folds = args.folds
    if args.seed is not None:
        space.seed = args.seed
        # The flag's promise: Optuna, the splits and the fits' seeds
        space.fixed |= {"seed": args.seed, "split_seed": args.seed}
    space.fixed.setdefault("seed", space.seed)
    space.fixed.setdefault("split_seed", space.seed)
    if args.data_dir:
        space.fixed["data_dir"] = str(Path(args.data_dir).resolve())
    space.trial_config({})  # re-check with the overrides applied
    if not args.mlflow_uri.startswith(("sqlite:", "http:", "https:", "postgresql", "mysql")):
        raise UserError(
            f"--mlflow-uri {args.mlflow_uri}: use sqlite:///FILE or a server URL "
            f"(MLflow's file store is gone)"
        )
    run_dir = Path(args.output).resolve() / space.name
    check_writable(Path(args.output), "--output")
    if args.storage is None:
        args.storage = str(run_dir / "ray")
    elif "://" not in args.storage:
        storage = Path(args.storage).resolve()
        if not storage.is_dir():
            raise UserError(
                f"--storage {args.storage}: no such folder; on a cluster it is the shared "
                f"mount every node reaches (mount it, or create it if it is local)"
            )
        check_writable(storage, "--storage")
        args.storage = str(storage)
    ran_before = _experiment_exists(args.storage, space.name)
    if args.resume and not ran_before:
        raise UserError(f"--resume: no search to resume in {run_dir} (run without --resume)")
    if not args.resume and ran_before:
        raise UserError(
            f"{run_dir}: a search already ran here; pass --resume to continue it, "
            f"or --output elsewhere / remove the folder to start afresh"
        )
    return space, run_dir


def check_writable(path: Path, flag: str) -> None:
    """Fail before Ray starts, and before anything is written, where `path` (or the folder
    it would be created in) cannot take files: by writing and removing a probe file, which
    also catches read-only file systems, where permission bits look fine to root."""
    existing = path.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nli_tune-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(
            f"{flag} {path}: cannot write in {existing} ({err.strerror}); pick a writable folder"
        ) from None


def _experiment_exists(storage: str, name: str) -> bool:
    """Whether Tune state of search `name` is in `storage` (a local path or a URI)."""
    if "://" not in storage:
        return (Path(storage) / name).exists()
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(storage)
    return filesystem.get_file_info(f"{root.rstrip('/')}/{name}").type != fs.FileType.NotFound


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key, value in MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    started = time.time()
    space, run_dir = prepare(args)
    if args.resume and (run_dir / PENDING_FILE).exists():
        replay_mlflow(args, space, run_dir)
        if (run_dir / "best_config.yaml").exists():
            print(f"the search in {run_dir} had finished: nothing else to resume")
            return 0
    base = space.trial_config({})
    data = load_redsm5(base.data_dir)
    pairs = data.pairs()
    n_posts = len(data.posts)
    if space.folds > n_posts:
        raise UserError(f"folds {space.folds}: more folds than the {n_posts} posts")
    plan = make_folds(pairs, space.folds, base.test_fraction, base.split_seed)

    from nli_tune.tuning.prepare import prepare_trial_data  # torch, transformers: seconds

    print(
        f"search '{space.name}': {space.num_samples} trials x {space.folds} folds, "
        f"scheduler {space.scheduler}; data {data.source} ({n_posts} posts, "
        f"{len(plan.test_posts)} held out for the final test)",
        flush=True,
    )
    say = (lambda *a, **k: None) if args.quiet else print
    trial_data = prepare_trial_data(space, base, data, pairs, plan, say)

    from nli_tune.tuning.tuner import SearchInterrupted, run_search

    try:
        best = run_search(
            space,
            base,
            trial_data,
            run_dir,
            args,
            data.fingerprint,
            worker_env(args.address, os.environ),
        )
    except SearchInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return 130
    _write_ensemble(best, space, data, plan, run_dir, args)
    _print_result(best, space, run_dir, args, minutes=(time.time() - started) / 60)
    return 0


def _write_ensemble(best: dict, space: SearchSpace, data, plan, run_dir: Path, args) -> None:
    """The exported trial's K fold models as one model (OUTPUT/<name>/ensemble/), scored
    once on the held-out test posts beside TF-IDF (training/ensemble.py)."""
    from nli_tune.training.ensemble import write_fold_ensemble
    from nli_tune.tuning.fold_checkpoints import fold_checkpoints

    t0 = time.time()
    cfg = space.trial_config(best["params"])
    about = {k: best[k] for k in ("space", "trial_id", "selected_by", "mlflow_run_id")}
    with tempfile.TemporaryDirectory() as scratch:
        storage = f"{args.storage.rstrip('/')}/train"
        dirs = fold_checkpoints(storage, best["trial_id"], best["epochs_run"], space.folds,
                                Path(scratch))  # fmt: skip
        metrics = write_fold_ensemble(
            cfg, dirs, data, plan.test_posts, run_dir / ENSEMBLE_DIR, about
        )
    test, tfidf = metrics["test"], metrics["baselines"]["tfidf_logreg"]
    lo, hi = metrics["model_minus_tfidf"]["ci95"]
    print(
        f"fold ensemble: {run_dir / ENSEMBLE_DIR / 'model'} ({space.folds} fold models of "
        f"{best['trial_id']}); on the {metrics['data']['test_posts']} held-out test posts "
        f"macro-F1 {test['macro_f1']:.3f} against TF-IDF's {tfidf['macro_f1']:.3f} (difference "
        f"95% CI {lo:+.3f} to {hi:+.3f}), within-criterion ROC-AUC {test['roc_auc_within']:.3f} "
        f"({time.time() - t0:.0f}s)"
    )


def _print_result(best: dict, space: SearchSpace, run_dir: Path, args, minutes: float) -> None:
    """The best config, the report (built here unless --no-report) and what to run next."""
    metric = best["selected_by"]
    print(
        f"\nbest config (by {metric}): {metric} {best[metric]:.4f} ± {best[metric + '_std']:.4f} "
        f"over {best['fits']} fits ({len(best['runs'])} run(s) x {space.folds} folds), "
        f"{best['fits_failed']} did not learn; its trial's cv macro-F1 "
        f"{best['cv_macro_f1']:.4f} ± {best['cv_macro_f1_std']:.4f}"
    )
    for key, value in best["params"].items():
        print(f"  {key}: {value}")
    print(
        f"wrote {run_dir / 'best_config.yaml'} and {run_dir / 'cv_results.csv'} ({minutes:.1f} min)"
    )
    offline = best["mlflow_offline"]
    if not args.no_report:
        from nli_tune.reporting.build import build_report

        t0 = time.time()
        try:
            page = build_report(run_dir, log_mlflow=not offline)
            where = "MLflow gets it on --resume" if offline else "also in the MLflow parent run"
            print(f"report:    {page} ({time.time() - t0:.0f}s; {where})")
        except Exception as err:  # the search's results are exported: do not lose them
            first = first_line(err)
            print(
                f"warning: the report failed ({type(err).__name__}: {first}); the search's "
                f"results are complete. Retry: python -m nli_tune.report {run_dir}",
                file=sys.stderr,
            )
    print(f"train it:  python -m nli_tune.train --config {run_dir / 'best_config.yaml'}")
    if offline:
        print(
            f"MLflow:    unreachable; its records wait in {run_dir / PENDING_FILE}. Once it "
            f"is back, replay them: the same command plus --resume"
        )
    else:
        print(f"MLflow:    python -m nli_tune.ui --output {run_dir}")
    print(f"Optuna:    optuna-dashboard sqlite:///{run_dir / STUDY_FILE}")


def replay_mlflow(args, space: SearchSpace, run_dir: Path) -> None:
    """Write the records kept while MLflow was unreachable, then fill in the MLflow run ids
    that the search's outputs could not know then."""
    import yaml

    from nli_tune.core.outputs import atomic_write_text, read_table
    from nli_tune.study.run_files import RESULTS_FILE, load_search_id
    from nli_tune.tracking.runs import Tracker, open_search_run, replay_pending

    pending = run_dir / PENDING_FILE
    search_id = load_search_id(run_dir)
    try:
        exp_id, parent_id = open_search_run(args.mlflow_uri, space, search_id, "")
        tracker = Tracker(args.mlflow_uri, exp_id, parent_id, search_id)
        n = replay_pending(pending, tracker)
        runs = tracker.trial_runs()
    except Exception as err:  # UserError: open_search_run could not reach or use MLflow
        reason = first_line(err)
        if not isinstance(err, UserError):
            name = type(err).__name__
            reason = f"--mlflow-uri {args.mlflow_uri}: the replay failed ({name}: {reason})"
        raise UserError(
            f"{reason}; the records stay in {pending}. Run --resume again once MLflow is back"
        ) from None
    results, best = run_dir / RESULTS_FILE, run_dir / "best_config.yaml"
    if results.exists():
        table = read_table(results)
        table["mlflow_run_id"] = table["trial_id"].map(runs).fillna("")
        atomic_write_text(results, table.to_csv(index=False))
    if best.exists():
        config = yaml.safe_load(best.read_text())
        config["search"]["mlflow_run_id"] = runs.get(config["search"]["trial_id"], "")
        atomic_write_text(best, yaml.safe_dump(config, sort_keys=False))
    if (run_dir / "report.html").exists():
        from nli_tune.reporting.build import log_to_mlflow
        from nli_tune.reporting.search_files import load_search

        log_to_mlflow(load_search(run_dir), run_dir / "report.html")
    print(f"MLflow: replayed {n} records kept while it was unreachable ({pending.name})")


if __name__ == "__main__":
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    sys.exit(run_cli(main))
