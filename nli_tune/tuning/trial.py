"""One search trial: a Ray Train TorchTrainer whose K workers each train one CV fold.

Workers train every epoch; at each scored epoch (ASHA's rungs and the trial's last; every
epoch without a scheduler) every worker reports its fold's validation metrics. A Train
callback (running in the Train controller) aggregates all K reports into the cross-fold
mean and std and hands them, through a small per-trial `Gate` actor, to the trial
function, which reports them to Tune. Workers wait at the gate until Tune has taken the
epoch, so a trial that ASHA stops computes no epoch beyond the one it was judged on.
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer

from nli_tune.redsm5.load import criterion_keys
from nli_tune.study.space import CONFIRMS_KEY, REPEAT_KEY, scored_epochs
from nli_tune.training.seeds import fit_seed
from nli_tune.tuning.driver_callbacks import release_placement_group

if TYPE_CHECKING:  # the fold workers import it (and torch) anyway; the trial actor need not
    from nli_tune.tuning.prepare import TrialData

# Per-fold metrics sent from each worker every epoch (numbers only, never text).
FOLD_METRICS = (
    "val_macro_f1",
    "val_criterion_macro_f1",  # the mean of the 9 criteria's F1 (the ReDSM5 authors' macro-F1)
    "val_f1_matched",
    "val_roc_auc",
    "val_roc_auc_within",
    "val_evidence_hit_at_1",
    "val_threshold",
    "val_pr_auc",
    "train_loss",
    "best_val_macro_f1",
    "tokens_per_s",
    "compute_seconds",  # training and scoring since the last report, in seconds
    "score_passes",  # times the fold scored a split so far (validation, calibration)
    "seed",  # the fold fit's own seed (training/seeds.py)
    "learned",  # 1 if the fit passes the learned-fit rule so far (training/learned.py), else 0
    "loss_ratio",  # its train loss, last epoch over first
    "calib_roc_auc_within",  # its within-criterion ROC-AUC on its calibration posts
)
CRITERION_METRICS = tuple(f"val_f1_{key}" for key in criterion_keys())  # fold F1 per criterion
# Test-only fault injection, read by the fold workers: "KEY=VALUE" makes fold 0 of every
# trial whose config has that value raise before it trains (tests of failure handling).
INJECT_ERROR_ENV = "NLI_TUNE_INJECT_ERROR"


# Written in a trial's Train run folder once its folds failed beyond Ray Train's retries.
# Tune retries a trial (its driver can be lost with a node); a failed-for-good one is not rerun.
FAILED_MARKER = "failed_for_good.txt"


@dataclass(frozen=True)
class TrialSettings:
    """What a trial needs besides its sampled config and the data."""

    base_config: dict  # the training keys every trial shares
    cpus_per_worker: float  # Ray CPUs per fold worker
    worker_threads: int  # torch threads per fold worker
    gpus_per_worker: float  # GPUs per fold worker (0: CPU)
    train_storage: str  # Ray Train's run folders (local path or URI every node reaches)
    rungs: list[int] | None  # epochs the folds score (ASHA's rungs); None: every epoch


class TrialFailed(RuntimeError):
    """A trial's folds failed beyond Ray Train's retries; the message is one line."""


def error_line(exc: BaseException) -> str:
    """'Type: first line' of a worker's error (the user's own exception, not Ray's
    wrapper, whose text starts with the task name and a traceback)."""
    cause = getattr(exc, "cause", None)  # RayTaskError carries the worker's exception
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def trial_error_text(trial) -> str:
    """A failed Tune trial's error text: its local error file, which Tune writes before it
    calls callbacks (the copy in storage comes later)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return trial.get_error() or ""


def trial_failure(trial) -> str:
    """The one line that says why a Tune trial failed (for progress, MLflow, restarts)."""
    return failure_line(trial_error_text(trial))


def failure_line(error_text: str | None) -> str:
    """The line worth showing from a failed trial's error text (Tune's error file): the
    TrialFailed message where there is one, else the text's last line, which in a Python
    traceback names the exception."""
    lines = [ln.strip() for ln in (error_text or "").strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if "TrialFailed: " in line:
            return line.split("TrialFailed: ", 1)[1][:300]
    return lines[-1][:300] if lines else "unknown error (see the trial's log)"


@ray.remote(num_cpus=0)
class Gate:
    """Rendezvous between the Train controller, the trial function and the workers."""

    def __init__(self):
        self._queue: asyncio.Queue | None = None
        self._cond: asyncio.Condition | None = None
        self._allowed = 0
        self._worker_pg: str | None = None  # hex id of the workers' placement group
        self._controller = None  # the Ray Train controller's actor handle, once it reported

    def _init(self):  # asyncio objects must be made inside the actor's event loop
        if self._queue is None:
            self._queue, self._cond = asyncio.Queue(), asyncio.Condition()

    async def push(self, item):
        self._init()
        await self._queue.put(item)

    async def pop(self):
        self._init()
        return await self._queue.get()

    async def allow(self, epoch: int):
        self._init()
        async with self._cond:
            self._allowed = max(self._allowed, epoch)
            self._cond.notify_all()

    async def wait_allowed(self, epoch: int):
        self._init()
        async with self._cond:
            await self._cond.wait_for(lambda: self._allowed >= epoch)

    async def set_worker_pg(self, pg_hex: str):
        self._worker_pg = pg_hex

    async def worker_pg(self) -> str | None:
        return self._worker_pg

    async def set_controller(self, handles: list):
        self._controller = handles[0]

    async def controller(self) -> list:
        return [self._controller]  # in a list: a bare handle would be awaited as a ref


def cross_fold_mean(reports: list[dict]) -> dict[str, Any]:
    """K workers' metrics for one epoch -> the cross-fold numbers Tune sees."""
    by_fold = sorted(reports, key=lambda m: m["fold"])
    scores = np.array([m["val_macro_f1"] for m in by_fold], dtype=float)
    out: dict[str, Any] = {
        "epoch": int(by_fold[0]["epoch"]),
        "cv_macro_f1": float(scores.mean()),
        "cv_macro_f1_std": float(scores.std()),
        # Threshold-free companion: early on, macro-F1 at 0.5 mostly says which class a
        # fold predicts for everything; ROC-AUC says whether it ranks pairs at all.
        "cv_roc_auc": _nanmean([m["val_roc_auc"] for m in by_fold]),
        "cv_criterion_macro_f1": _nanmean([m["val_criterion_macro_f1"] for m in by_fold]),
        "cv_roc_auc_within": _nanmean([m["val_roc_auc_within"] for m in by_fold]),
        "cv_pr_auc": _nanmean([m["val_pr_auc"] for m in by_fold]),
        "cv_evidence_hit_at_1": _nanmean([m["val_evidence_hit_at_1"] for m in by_fold]),
        "folds_stopped": int(sum(bool(m["stopped_early"]) for m in by_fold)),
        # Fits that do not pass the learned-fit rule (read at a trial's last epoch).
        "fits_failed": int(sum(m.get("learned", 1.0) == 0 for m in by_fold)),
        # Folds run side by side: the slowest one bounds the epochs since the last report.
        "epoch_compute_s": float(max(m["compute_seconds"] for m in by_fold)),
        "worker_peak_rss_mb": float(max(m["peak_rss_mb"] for m in by_fold)),
        "worker_tokens_per_s": _nanmean([m["tokens_per_s"] for m in by_fold]),
    }
    # Per-criterion F1, averaged over folds only (the report's per-criterion view).
    out |= {
        f"cv_{name[4:]}": _nanmean([m.get(name, np.nan) for m in by_fold])
        for name in CRITERION_METRICS
    }
    for m in by_fold:
        k = m["fold"]
        out |= {
            f"fold{k}_{name[4:] if name.startswith('val_') else name}": float(m[name])
            for name in FOLD_METRICS
        }
    return out


def _nanmean(values: list[float]) -> float:
    """Mean over the folds where the metric is defined (NaN: a fold with one class)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


class GateCallback(ray.train.UserCallback):
    """Runs in the Train controller: sees every worker's report, pushes the aggregate."""

    def __init__(self, gate):
        self.gate = gate
        self._introduced = False

    def after_report(self, run_context, metrics, checkpoint):
        if not self._introduced:  # so the trial can abort this controller when Tune stops it
            self.gate.set_controller.remote([ray.get_runtime_context().current_actor])
            self._introduced = True
        self.gate.push.remote(cross_fold_mean(metrics))  # no ray.get: the controller is async

    def after_exception(self, run_context, worker_exceptions):
        # A worker raised or died (killed, OOM, node lost): Ray Train restarts the group
        # from the last checkpoint, up to max_failures times. The trial says so in its runs.
        rank, err = min(worker_exceptions.items(), key=lambda item: item[0])
        self.gate.push.remote({"failure": f"fold {rank}: {error_line(err)}"})


def fold_worker(loop_config: dict) -> None:
    """Ray Train worker: rank k trains CV fold k with the one-fold trainer."""
    import torch

    from nli_tune.core.config import TrainConfig
    from nli_tune.model.classifier import build_model
    from nli_tune.training.fold_trainer import FoldTrainer

    k = ray.train.get_context().get_world_rank()
    torch.set_num_threads(loop_config["threads"])
    group = ray.util.get_current_placement_group()
    if k == 0 and group is not None:
        loop_config["gate"].set_worker_pg.remote(group.id.hex())
    shared: TrialData = ray.get(loop_config["data"]["ref"])
    cfg = TrainConfig.from_dict(loop_config["train_config"] | {"seed": loop_config["seeds"][k]})
    model, _ = build_model(cfg, tokenizer=False)  # the driver tokenized everything
    data = shared.unit_data(cfg)
    train_posts, val_posts = shared.plan.fold(k)
    _maybe_inject_error(loop_config["train_config"], k)
    device = ray.train.torch.get_device() if loop_config["use_gpu"] else torch.device("cpu")
    trainer = FoldTrainer(cfg, model, data.subset(train_posts), data.subset(val_posts), device)
    gate = loop_config["gate"]

    def report(metrics: dict, save: bool) -> None:
        payload = {
            "fold": k,
            "epoch": metrics["epoch"],
            "stopped_early": bool(metrics["stopped_early"]),
        }
        names = FOLD_METRICS + CRITERION_METRICS
        payload |= {name: float(metrics.get(name, float("nan"))) for name in names}
        payload["score_passes"] = float(trainer.state.score_passes)
        payload["seed"] = float(cfg.seed)
        check = trainer.fit_check()
        payload |= {"learned": float(check.learned), "loss_ratio": check.loss_ratio}
        payload["calib_roc_auc_within"] = check.calib_roc_auc_within
        payload["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not save:
            ray.train.report(payload)
            return
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(Path(tmp) / f"fold{k}")  # one folder per rank: they merge
            ray.train.report(
                payload,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=f"epoch_{metrics['epoch']:03d}",
            )

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a retried worker or a resumed search: continue the fold
        with checkpoint.as_directory() as ckpt_dir:
            trainer.load_checkpoint(Path(ckpt_dir) / f"fold{k}")
        # Re-report the restored epoch so a resumed trial always reports at least once.
        state = trainer.state
        last = state.best_metrics if state.stopped else state.history[-1]
        report(
            {**last, "epoch": state.epoch, "stopped_early": state.stopped, "compute_seconds": 0},
            False,  # computed before: no second count
        )
        if state.epoch < cfg.epochs:
            ray.get(gate.wait_allowed.remote(state.epoch))
    # Validation is scored (and reported to Tune) only at the epochs the scheduler judges
    # and the last: every worker skips the same epochs, so all report equally often.
    scored = loop_config["scored_epochs"]
    unreported_s = 0.0  # compute of the epochs trained since the last report
    while trainer.state.epoch < cfg.epochs:
        judged = scored is None or trainer.state.epoch + 1 in scored
        metrics = trainer.step_epoch(score=judged)
        unreported_s += metrics["compute_seconds"]
        if not judged:
            continue
        report(metrics | {"compute_seconds": unreported_s}, True)
        unreported_s = 0.0
        if trainer.state.epoch < cfg.epochs:
            ray.get(gate.wait_allowed.remote(trainer.state.epoch))


def _maybe_inject_error(config: dict, fold: int) -> None:
    spec = os.environ.get(INJECT_ERROR_ENV)
    if not spec or fold != 0:
        return
    key, _, value = spec.partition("=")
    if str(config.get(key)) == value:
        raise RuntimeError(f"injected by {INJECT_ERROR_ENV}={spec} (a test of failed trials)")


def run_trial(sampled: dict, shared: dict, settings: TrialSettings) -> None:
    """Tune function trainable: one TorchTrainer of K fold workers, reported per epoch."""
    from nli_tune.core.config import TrainConfig

    sampled = dict(sampled)
    repeat = int(sampled.pop(REPEAT_KEY, 0))  # a confirmation rerun: new seeds, same config
    sampled.pop(CONFIRMS_KEY, None)
    cfg = TrainConfig.from_dict(settings.base_config | sampled)
    # Every fold fit its own seed, from the config it fits and the repeat: trials do not all
    # draw the same luck, and a rerun of a config draws new luck.
    seeds = [fit_seed(cfg.seed, sampled, k, repeat) for k in range(cfg.folds)]
    run_name = f"trial_{tune.get_context().get_trial_id()}"  # stable: a resume finds it
    marker = f"{settings.train_storage}/{run_name}/{FAILED_MARKER}"
    if (earlier := _read_text(marker)) is not None:
        raise TrialFailed(earlier)  # a Tune retry of a trial that failed for good: no rerun
    gate = Gate.remote()
    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={
            "train_config": cfg.to_dict(),
            "data": shared,
            "gate": gate,
            "use_gpu": use_gpu,
            "threads": settings.worker_threads,
            "seeds": seeds,
            "scored_epochs": scored_epochs(settings.rungs, cfg.epochs),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.folds, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            storage_path=settings.train_storage,
            name=run_name,
            failure_config=ray.train.FailureConfig(max_failures=2, controller_failure_limit=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[GateCallback(gate)],
        ),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # surfaced in the trial thread below
            failure.append(err)
        finally:
            gate.push.remote(None)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    failures: list[str] = []  # worker failures Ray Train recovered from (or not), in order
    compute_s = 0.0  # the folds' training and scoring so far (slowest fold per epoch)
    while (item := ray.get(gate.pop.remote())) is not None:
        if "failure" in item:
            failures.append(item["failure"])
            continue
        # The group's id rides along so the driver can free it once Tune ends the trial
        # (read every epoch: a restarted worker group has a new one).
        worker_pg = ray.get(gate.worker_pg.remote())
        if item["epoch"] >= cfg.epochs:
            # Last epoch: let Ray Train finish before Tune hears of it. Tune ends the trial
            # on this report, and the driver then frees the worker group; a controller still
            # finishing would take that for a crash and start a new group nobody frees
            # (seen: it held the CPUs the next trial's workers waited for).
            thread.join()
        compute_s += item["epoch_compute_s"]
        item |= {"worker_pg": worker_pg, "worker_failures": len(failures), "compute_s": compute_s}
        if failures:
            item["last_worker_failure"] = failures[-1]
        try:
            tune.report(item)  # returns when Tune wants the next epoch
        except BaseException:  # Tune stopped the trial (ASHA, Ctrl-C): SystemExit here
            _abort_training(gate)
            raise
        gate.allow.remote(item["epoch"])
    thread.join()
    try:
        release_placement_group(ray.get(gate.worker_pg.remote()))
    finally:
        if failure:  # the training error matters more than a clean-up error
            first = failures[-1] if failures else error_line(failure[0])
            message = f"{first} (after {len(failures)} worker failure(s))"
            _write_text(marker, message)
            raise TrialFailed(message) from failure[0]


def _abort_training(gate, timeout_s: float = 30.0) -> None:
    """Ray Train's own graceful abort (what its Ctrl-C handler does): the controller
    shuts its worker group down, frees the group and exits, without starting a new one."""
    try:
        (controller,) = ray.get(gate.controller.remote(), timeout=timeout_s)
        if controller is not None:
            ray.get(controller.abort.remote(), timeout=timeout_s)
    except Exception:
        pass  # the controller exits inside abort, or had died with its workers already


def _read_text(uri: str) -> str | None:
    """A small file's text from a local path or a storage URI (s3://...); None if absent."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def _write_text(uri: str, text: str) -> None:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())
