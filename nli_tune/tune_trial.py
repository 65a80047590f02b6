"""One search trial: a Ray Train TorchTrainer whose K workers each train one CV fold.

Per epoch every worker reports its fold's validation metrics; a Train callback (running
in the Train controller) aggregates all K reports into the cross-fold mean and std and
hands them, through a small per-trial `Gate` actor, to the trial function, which reports
them to Tune. Workers wait at the gate until Tune has taken the epoch, so a trial that
ASHA stops computes no epoch beyond the one it was judged on.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer

from nli_tune.data import criterion_keys

# Per-fold metrics sent from each worker every epoch (numbers only, never text).
FOLD_METRICS = (
    "val_macro_f1",
    "val_f1_matched",
    "val_roc_auc",
    "val_roc_auc_within",
    "val_evidence_hit_at_1",
    "val_threshold",
    "val_pr_auc",
    "train_loss",
    "best_val_macro_f1",
    "tokens_per_s",
)
CRITERION_METRICS = tuple(f"val_f1_{key}" for key in criterion_keys())  # fold F1 per criterion
# Test-only fault injection, read by the fold workers: "KEY=VALUE" makes fold 0 of every
# trial whose config has that value raise before it trains (tests of failure handling).
INJECT_ERROR_ENV = "NLI_TUNE_INJECT_ERROR"


# Written in a trial's Train run folder once its folds failed beyond Ray Train's retries.
# Tune retries a trial (its driver can be lost with a node); a failed-for-good one is not rerun.
FAILED_MARKER = "failed_for_good.txt"


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


def aggregate(reports: list[dict]) -> dict[str, Any]:
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
        "cv_roc_auc_within": _nanmean([m["val_roc_auc_within"] for m in by_fold]),
        "cv_evidence_hit_at_1": _nanmean([m["val_evidence_hit_at_1"] for m in by_fold]),
        "folds_stopped": int(sum(bool(m["stopped_early"]) for m in by_fold)),
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


def release_placement_group(pg_hex: str | None) -> bool:
    """Remove a finished trial's worker placement group; False if it is already gone.

    Ray Train's own cleaner asks the state API, which needs the dashboard, whether the
    controller is still alive. Without the dashboard (`--no-dashboard`) a finished or
    ASHA-stopped trial's workers kept their CPUs reserved, and the next trial's workers
    waited for them until the start-up timeout failed the trial.
    """
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    if not pg_hex:
        return False
    group = PlacementGroup(ray.PlacementGroupID.from_hex(pg_hex))
    if placement_group_table(group).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(group)
    return True


class ReleaseWorkerGroups(tune.Callback):
    """Driver side: frees each ended trial's worker group, stopped ones included, and the
    group of a trial Tune restarts: when a lost node takes the trial's driver, Ray
    reschedules the old group's bundles onto the surviving nodes and nothing frees them
    (seen: the restarted trial waited for those CPUs until its start-up timeout).

    Each group is freed `RELEASE_DELAY_S` after its trial ended, not at once: a Train
    controller still alive takes a vanished group for a failure and starts a new one, and
    if it dies while it does so, Ray keeps that new group reserved for good (seen: it
    starved every later search on the cluster). By then the trial has aborted its
    controller (`run_trial`) or the controller died with the trial's actor."""

    RELEASE_DELAY_S = 5.0

    def __init__(self):
        self._due: dict[str, float] = {}  # worker group id -> when to free it

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        for pg_hex in [pg for pg, due in self._due.items() if due <= now]:
            del self._due[pg_hex]
            try:
                release_placement_group(pg_hex)
            except Exception as err:  # never let clean-up break the search
                print(f"note: could not free worker group {pg_hex} ({err})", flush=True)

    def _schedule(self, trial) -> None:
        pg_hex = (trial.last_result or {}).get("worker_pg")
        if pg_hex:
            self._due[pg_hex] = time.monotonic() + self.RELEASE_DELAY_S


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
        self.gate.push.remote(aggregate(metrics))  # no ray.get: the controller is async

    def after_exception(self, run_context, worker_exceptions):
        # A worker raised or died (killed, OOM, node lost): Ray Train restarts the group
        # from the last checkpoint, up to max_failures times. The trial says so in its runs.
        rank, err = min(worker_exceptions.items(), key=lambda item: item[0])
        self.gate.push.remote({"failure": f"fold {rank}: {error_line(err)}"})


def fold_worker(loop_config: dict) -> None:
    """Ray Train worker: rank k trains CV fold k with the one-fold trainer."""
    import torch

    from nli_tune.config import TrainConfig
    from nli_tune.encoding import assemble
    from nli_tune.model import build_model
    from nli_tune.trainer import FoldTrainer

    k = ray.train.get_context().get_world_rank()
    torch.set_num_threads(loop_config["threads"])
    group = ray.util.get_current_placement_group()
    if k == 0 and group is not None:
        loop_config["gate"].set_worker_pg.remote(group.id.hex())
    shared = ray.get(loop_config["data"]["ref"])
    cfg = TrainConfig.from_dict(loop_config["train_config"])
    model, _ = build_model(cfg, tokenizer=False)  # the driver tokenized everything
    table, tokens = shared["units"][cfg.unit]
    data = assemble(
        table, tokens, shared["format"], shared["pairs"], cfg.max_length, cfg.pair_order, cfg.unit
    )
    train_posts, val_posts = shared["plan"].fold(k)
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
        report({**last, "epoch": state.epoch, "stopped_early": state.stopped}, False)
        if state.epoch < cfg.epochs:
            ray.get(gate.wait_allowed.remote(state.epoch))
    while trainer.state.epoch < cfg.epochs:
        metrics = trainer.step_epoch()
        report(metrics, True)
        if trainer.state.epoch < cfg.epochs:
            ray.get(gate.wait_allowed.remote(trainer.state.epoch))


def _maybe_inject_error(config: dict, fold: int) -> None:
    spec = os.environ.get(INJECT_ERROR_ENV)
    if not spec or fold != 0:
        return
    key, _, value = spec.partition("=")
    if str(config.get(key)) == value:
        raise RuntimeError(f"injected by {INJECT_ERROR_ENV}={spec} (a test of failed trials)")


def run_trial(sampled: dict, shared: dict, settings: dict) -> None:
    """Tune function trainable: one TorchTrainer of K fold workers, reported per epoch."""
    from nli_tune.config import TrainConfig

    cfg = TrainConfig.from_dict(settings["base_config"] | sampled)
    run_name = f"trial_{tune.get_context().get_trial_id()}"  # stable: a resume finds it
    marker = f"{settings['train_storage']}/{run_name}/{FAILED_MARKER}"
    if (earlier := _read_text(marker)) is not None:
        raise TrialFailed(earlier)  # a Tune retry of a trial that failed for good: no rerun
    gate = Gate.remote()
    use_gpu = settings["gpus_per_worker"] > 0
    resources = {"CPU": settings["cpus_per_worker"]}
    if use_gpu:
        resources["GPU"] = settings["gpus_per_worker"]
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={
            "train_config": cfg.to_dict(),
            "data": shared,
            "gate": gate,
            "use_gpu": use_gpu,
            "threads": max(1, round(settings["cpus_per_worker"])),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.folds, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            storage_path=settings["train_storage"],
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
        item |= {"worker_pg": worker_pg, "worker_failures": len(failures)}
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
