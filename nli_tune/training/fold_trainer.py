"""One-fold trainer: trains the unit classifier on one (train, validation) split of posts.

Training examples are (unit, criterion) pairs labelled by the located evidence (see
units/evidence.py): every positive, the annotated explicit absences first among the negatives,
then random other negatives up to `neg_ratio` per positive, redrawn each epoch. With
`evidence_weight < 1` a post-level multiple-instance loss joins in: each (post, criterion)
bag's units are scored without gradient, its MIL_UNITS best are re-run with gradient and
aggregated (exact for max and topk <= MIL_UNITS; the near-zero tail of lse / attention is
dropped), and the aggregate is trained on the post label.

A post's score is the aggregate of its units' logits. It is calibrated on training posts
held out from fitting (`calibration: holdout`): Platt scaling makes it a probability, and
the decision threshold is the one with the best macro-F1 on those posts; never on the
validation or test posts. No Ray here: the search's fold workers and `train` both drive
this class; every epoch's metrics go to `on_epoch`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from nli_tune.core.config import TrainConfig
from nli_tune.evaluation.metrics import post_metrics, roc_auc_within
from nli_tune.evaluation.scoring import PostScores, forward_pairs, forward_units, score_posts
from nli_tune.model.aggregate import aggregate
from nli_tune.model.calibration import Calibration, fit_calibration
from nli_tune.model.classifier import load_trainable, trainable_state
from nli_tune.model.precision import autocast_dtype
from nli_tune.model.prefix import cache_prefix
from nli_tune.pairs.encoding import UnitData, bucketed_batches, pair_lengths
from nli_tune.redsm5.folds import calibration_split
from nli_tune.training.checkpoints import load_checkpoint, save_checkpoint
from nli_tune.training.learned import FitCheck, check_fit
from nli_tune.training.sampling import MIL_UNITS, Sampler

MAX_GRAD_NORM = 1.0  # gradients clipped to this global norm before every optimizer step


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no decay on vectors (DoRA magnitudes, biases,
    the attention query)."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )


def class_weighted_loss(
    n_neg: float, n_pos: float, cfg: TrainConfig, device: torch.device
) -> nn.CrossEntropyLoss:
    """Cross-entropy over (unmatched, matched), each class weighted by the inverse of its
    share of an epoch's examples (equal weights without cfg.class_weights)."""
    counts = np.array([n_neg, n_pos], float)
    weights = counts.sum() / (2 * np.maximum(counts, 1)) if cfg.class_weights else np.ones(2)
    return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))


def two_class(logit: torch.Tensor) -> torch.Tensor:
    """Unit logits [B] as (unmatched, matched) class logits [B, 2]: softmax over (0, d) is
    sigmoid(d), so the class-weighted cross-entropy is a class-weighted binary
    cross-entropy on the unit logit, for an nli pair and a multilabel criterion alike."""
    return torch.stack([torch.zeros_like(logit), logit], dim=1)


@dataclass
class FoldState:
    epoch: int = 0  # epochs finished
    best_score: float = -1.0  # best validation macro-F1 so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement
    stopped: bool = False  # early-stopped: later epochs only re-report the best
    score_passes: int = 0  # times a split's posts were scored (validation or calibration)
    best_metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


class FoldTrainer:
    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train: UnitData,
        val: UnitData | None,
        device: str | torch.device = "cpu",
        log: Callable[[str], None] | None = None,
    ):
        if len(train.posts) == 0:
            raise ValueError("training split has no posts")
        self.cfg, self.model, self.val = cfg, model, val
        self.device = torch.device(device)
        self.log = log or (lambda msg: None)
        # Called after every optimizer batch with {epoch, step, steps, loss, tokens_per_s}
        # (train's progress bar); None = silent.
        self.on_step: Callable[[dict], None] | None = None
        self.amp = autocast_dtype(cfg.precision, self.device)
        self.model.to(self.device)
        # The frozen bottom layers' output, once per unit (a no-op where every layer adapts).
        train = cache_prefix(model, train, cfg.eval_batch_size, self.device, self.amp)
        if val is not None:
            val = self.val = cache_prefix(model, val, cfg.eval_batch_size, self.device, self.amp)
        self.rng = np.random.default_rng(cfg.seed)
        self.last_examples = np.zeros((0, 2), np.int64)  # (unit, criterion) rows, last epoch
        self.train, self.calib = train, None
        fit_posts, calib_posts = calibration_split(train.pairs_frame(), cfg)
        if calib_posts:
            self.train, self.calib = train.subset(fit_posts), train.subset(calib_posts)
        self.calibration = Calibration()
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
        self.sampler = Sampler(cfg, self.train)
        # What the trainer's callers read: the evidence examples' tiers.
        self.positives = self.sampler.positives
        self.n_hard, self.n_cross = self.sampler.n_hard, self.sampler.n_cross
        self.evidence_examples = self.sampler.evidence_examples
        self._mil_bags = self.sampler.mil_bags
        n_batches = self.sampler.batches_per_epoch()
        total = cfg.epochs * math.ceil(n_batches / cfg.grad_accum)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.warmup_ratio * total), max(total, 1)
        )
        self.loss_fn = class_weighted_loss(
            self.sampler.n_negatives(), len(self.positives), cfg, self.device
        )
        self.state = FoldState()
        self.best_params: dict[str, torch.Tensor] | None = None
        self.best_calibration = Calibration()
        self.calib_roc_auc_within: float | None = None  # at the last calibration

    # --- training -------------------------------------------------------------------------
    def _forward(self, data: UnitData, units: np.ndarray, crits: np.ndarray):
        return forward_pairs(self.model, data, units, crits, self.device, self.amp)

    def evidence_step(self, examples: np.ndarray) -> tuple[float, int]:
        """Loss (unscaled) and real tokens of one batch of (unit, criterion) examples."""
        units, crits = examples[:, 0], examples[:, 1]
        logit, _, tokens = self._forward(self.train, units, crits)
        labels = torch.from_numpy(self.train.evidence[units, crits].astype(np.int64))
        loss = self.loss_fn(two_class(logit), labels.to(self.device))
        (loss * self.cfg.evidence_weight / self.cfg.grad_accum).backward()
        return loss.item(), tokens

    def unit_step(self, units: np.ndarray) -> tuple[float, int]:
        """multilabel: one pass per unit, the loss over all its criteria whose label is
        known (a unit of a matched post whose evidence was not all located is unknown for
        that criterion). Nine labels per pass, where a sampled (unit, criterion) example
        would train one: better ranking at a quarter of the passes (neg_ratio 1 against 3;
        benchmarks/quality-depth.json)."""
        logits, _, tokens = forward_units(self.model, self.train, units, self.device, self.amp)
        labels = torch.from_numpy(self.train.evidence[units].astype(np.int64)).to(self.device)
        known = labels >= 0
        loss = self.loss_fn(two_class(logits[known]), labels[known])
        (loss * self.cfg.evidence_weight / self.cfg.grad_accum).backward()
        return loss.item(), tokens

    def mil_step(self, bags: np.ndarray) -> tuple[float, int]:
        """Post-level loss of a batch of (post, criterion) bags, through each bag's best
        MIL_UNITS units."""
        data, chosen, bag_of = self.train, [], []
        scored = ~data.external
        with torch.no_grad():
            for b, (post, crit) in enumerate(bags):
                units = np.flatnonzero((data.post_index == post) & scored)
                if len(units) > MIL_UNITS:
                    logit, _, _ = self._forward(data, units, np.full(len(units), crit))
                    best = torch.topk(logit, MIL_UNITS).indices.cpu().numpy()
                    units = units[np.sort(best)]
                chosen += list(units)
                bag_of += [b] * len(units)
        units, crits = np.asarray(chosen), bags[np.asarray(bag_of), 1]
        logit, attention, tokens = self._forward(data, units, crits)
        bag_logit = aggregate(
            self.cfg.aggregate,
            logit,
            torch.as_tensor(bag_of, device=self.device),
            len(bags),
            attention,
            self.cfg.topk,
        )
        labels = torch.as_tensor(data.post_labels[bags[:, 0], bags[:, 1]], device=self.device)
        pos = max(int(labels.sum()), 1)
        loss = nn.functional.binary_cross_entropy_with_logits(
            bag_logit,
            labels.float(),
            pos_weight=torch.tensor((len(bags) - pos) / pos, device=self.device).clamp(min=1.0),
        )
        (loss * (1 - self.cfg.evidence_weight) / self.cfg.grad_accum).backward()
        return loss.item(), tokens

    def step(self, kind: str, batch: np.ndarray, update: bool = True) -> tuple[float, int]:
        """Forward + backward one batch ("evidence" examples, multilabel "units" or "mil"
        bags) and, if
        `update`, step the optimizer; returns (loss, real tokens)."""
        run = {"evidence": self.evidence_step, "units": self.unit_step, "mil": self.mil_step}
        loss, tokens = run[kind](batch)
        if update:
            torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss, tokens

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        start, tokens, total_loss = time.perf_counter(), 0, 0.0
        examples = self.evidence_examples(self.rng)
        self.last_examples = examples  # ids only: what benchmarks compare other loops on
        if self.cfg.pairing == "multilabel":  # the examples' units, each once, all criteria
            units = np.unique(examples[:, 0])
            labels = self.train.evidence[units]
            self.loss_fn = class_weighted_loss(
                float((labels == 0).sum()), float((labels == 1).sum()), self.cfg, self.device
            )
            batches = bucketed_batches(self.train.lengths[units], self.cfg.batch_size, self.rng)
            steps = [("units", units[b]) for b in batches]
        else:
            lengths = pair_lengths(self.train, examples[:, 0], examples[:, 1])
            batches = bucketed_batches(lengths, self.cfg.batch_size, self.rng)
            steps = [("evidence", examples[b]) for b in batches]
        bags = self._mil_bags(self.rng)
        size = self.sampler.mil_bag_batch()
        order = self.rng.permutation(len(bags))
        steps += [("mil", bags[order[i : i + size]]) for i in range(0, len(bags), size)]
        steps = [steps[i] for i in self.rng.permutation(len(steps))]
        self.optimizer.zero_grad(set_to_none=True)
        for i, (kind, batch) in enumerate(steps):
            last = i + 1 == len(steps)
            loss, n_tokens = self.step(kind, batch, (i + 1) % self.cfg.grad_accum == 0 or last)
            total_loss += loss
            tokens += n_tokens
            if self.on_step is not None:
                self.on_step(
                    {
                        "epoch": self.state.epoch,
                        "step": i + 1,
                        "steps": len(steps),
                        "loss": total_loss / (i + 1),
                        "tokens_per_s": tokens / (time.perf_counter() - start),
                    }
                )
        seconds = time.perf_counter() - start
        return {
            "train_loss": total_loss / max(len(steps), 1),
            "tokens_per_s": tokens / seconds,
            "epoch_seconds": seconds,
        }

    # --- scoring ----------------------------------------------------------------------------
    def score_posts(self, data: UnitData) -> PostScores:
        """Aggregated logit and best unit of every (post, criterion) of `data`."""
        cfg = self.cfg
        self.state.score_passes += 1
        return score_posts(
            self.model, data, cfg.aggregate, cfg.topk, cfg.eval_batch_size, self.device, self.amp
        )

    def calibrate(self) -> Calibration:
        """Fit the post-score calibration on the held-out training posts (if any); their
        within-criterion ROC-AUC is kept for the learned-fit rule (`fit_check`)."""
        if self.calib is not None:
            scores = self.score_posts(self.calib)
            self.calibration = fit_calibration(
                scores.logits.reshape(-1), self.calib.post_labels.reshape(-1), self.cfg.calibration
            )
            self.calib_roc_auc_within = roc_auc_within(self.calib.post_labels, scores.logits)
        return self.calibration

    def fit_check(self) -> FitCheck:
        """Did this fit learn, by the one rule (training/learned.py), as of its last
        calibration."""
        losses = [h["train_loss"] for h in self.state.history if "train_loss" in h]
        return check_fit(losses, self.calib_roc_auc_within, self.cfg)

    def evaluate(self, data: UnitData) -> dict[str, float]:
        scores = self.score_posts(data)
        return post_metrics(data, scores, self.calibration)

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> FoldState:
        """Train to cfg.epochs (from the current state: a restored checkpoint resumes)."""
        while self.state.epoch < self.cfg.epochs:
            metrics = self.step_epoch()
            if on_epoch is not None:
                on_epoch(metrics)
        if self.val is not None and self.best_params is not None:
            self.load_trainable(self.best_params)  # leave the model at its best epoch
            self.calibration = self.best_calibration
        elif self.val is None:
            self.calibrate()
        return self.state

    def step_epoch(self, score: bool = True) -> dict:
        """Run one epoch (or, once stopped, re-report the best) and return its metrics.

        `score=False` trains only: no calibration, no validation scoring, no early-stop
        count. A search scores only at the epochs its scheduler judges (and the last), as
        scoring every sentence against every criterion costs more than the training."""
        s = self.state
        s.epoch += 1
        if s.stopped:
            return {
                **s.best_metrics,
                "epoch": s.epoch,
                "stopped_early": True,
                "compute_seconds": 0.0,
            }
        start = time.perf_counter()
        metrics: dict = {"epoch": s.epoch, **self.train_epoch(), "scored": False}
        if self.val is not None and score:
            metrics = self._score_epoch(metrics)
        metrics["stopped_early"] = False
        metrics["compute_seconds"] = time.perf_counter() - start  # training + scoring
        # Per-criterion F1s (val_f1_<CRITERION>) stay out of the history; val_f1_matched,
        # which a resumed fold re-reports, stays in.
        s.history.append(
            {
                k: v
                for k, v in metrics.items()
                if not k.startswith("val_f1_") or k == "val_f1_matched"
            }
        )
        return metrics

    def _score_epoch(self, metrics: dict) -> dict:
        """`metrics` plus the validation scores, after calibrating; tracks the best epoch
        and the early stop (patience counts scored epochs)."""
        s = self.state
        self.calibrate()
        val = self.evaluate(self.val)
        metrics = metrics | {f"val_{k}": v for k, v in val.items()} | {"scored": True}
        improved = val["macro_f1"] > s.best_score
        if improved:
            s.best_score, s.best_epoch, s.bad_epochs = val["macro_f1"], s.epoch, 0
            self.best_params = self.trainable_state()
            self.best_calibration = self.calibration
        else:
            s.bad_epochs += 1
        metrics |= {"best_val_macro_f1": s.best_score, "best_epoch": s.best_epoch}
        if improved:
            s.best_metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        if self.cfg.patience and s.bad_epochs >= self.cfg.patience:
            s.stopped = True
            self.log(
                f"early stop after epoch {s.epoch}: best {s.best_score:.4f} at epoch {s.best_epoch}"
            )
        return metrics

    # --- checkpoints (safetensors + JSON; no pickle) ---------------------------------------
    def _trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self.model)

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        load_trainable(self.model, state)

    def save_checkpoint(self, out_dir: str | Path) -> None:
        save_checkpoint(self, out_dir)

    def load_checkpoint(self, src_dir: str | Path) -> None:
        load_checkpoint(self, src_dir)
