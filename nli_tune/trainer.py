"""One-fold trainer: trains the pair classifier on one (train, validation) split.

No Ray here: the search's fold workers and `train` both drive this class, and every epoch's
metrics go to an `on_epoch` callback so the search can report each epoch. A fold that stops
early keeps reporting its best epoch's metrics, so parallel folds stay in step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import get_linear_schedule_with_warmup

from nli_tune.config import TrainConfig
from nli_tune.encoding import EncodedPairs, bucketed_batches, collate, sorted_batches
from nli_tune.metrics import classification_metrics

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX512-BF16 / AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision`, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


@dataclass
class FoldState:
    epoch: int = 0  # epochs finished
    best_score: float = -1.0  # best validation macro-F1 so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement
    stopped: bool = False  # early-stopped: later epochs only re-report the best
    best_metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


class FoldTrainer:
    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train: EncodedPairs,
        val: EncodedPairs | None,
        pad_id: int,
        device: str | torch.device = "cpu",
        log: Callable[[str], None] | None = None,
    ):
        if len(train) == 0:
            raise ValueError("training split has no pairs")
        self.cfg, self.model, self.train, self.val = cfg, model, train, val
        self.pad_id, self.device = pad_id, torch.device(device)
        self.log = log or (lambda msg: None)
        self.progress_lines = 0  # progress lines logged within each epoch (0 = none)
        self.amp = autocast_dtype(cfg.precision, self.device)
        self.model.to(self.device)
        self.rng = np.random.default_rng(cfg.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        # No decay on vectors (DoRA magnitudes, biases, the attention query).
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=cfg.lr,
        )
        n_batches = math.ceil(self._epoch_size() / cfg.batch_size)
        total = cfg.epochs * math.ceil(n_batches / cfg.grad_accum)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(cfg.warmup_ratio * total), max(total, 1)
        )
        counts = np.bincount(train.labels, minlength=2).astype(float)
        if cfg.neg_ratio is not None:  # the loss sees the subsampled class balance
            counts[0] = min(counts[0], cfg.neg_ratio * counts[1])
        weights = counts.sum() / (2 * np.maximum(counts, 1)) if cfg.class_weights else np.ones(2)
        self.loss_fn = nn.CrossEntropyLoss(
            weight=torch.tensor(weights, dtype=torch.float32, device=self.device)
        )
        self.state = FoldState()
        self._best_params: dict[str, torch.Tensor] | None = None

    # --- training -------------------------------------------------------------------------
    def _autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def micro_step(self, idx: np.ndarray, optimizer_step: bool = True) -> tuple[float, int]:
        """Forward + backward one batch (and step the optimizer); returns (loss, real tokens)."""
        batch = {k: v.to(self.device) for k, v in collate(self.train, idx, self.pad_id).items()}
        with self._autocast():
            logits = self.model(batch["input_ids"], batch["attention_mask"])
        loss = self.loss_fn(logits.float(), batch["labels"])
        (loss / self.cfg.grad_accum).backward()
        if optimizer_step:
            torch.nn.utils.clip_grad_norm_(self._trainable(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.item(), int(batch["attention_mask"].sum())

    def _epoch_size(self) -> int:
        """Training pairs per epoch: all, or every matched pair plus neg_ratio per matched."""
        n_pos = int(self.train.labels.sum())
        if self.cfg.neg_ratio is None:
            return len(self.train)
        n_neg = len(self.train) - n_pos
        return n_pos + min(n_neg, math.ceil(self.cfg.neg_ratio * max(n_pos, 1)))

    def _epoch_pairs(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of this epoch's training pairs; with neg_ratio set, the unmatched ones are
        a fresh random draw each epoch."""
        if self.cfg.neg_ratio is None:
            return np.arange(len(self.train))
        pos = np.flatnonzero(self.train.labels == 1)
        neg = np.flatnonzero(self.train.labels == 0)
        draw = rng.choice(neg, self._epoch_size() - len(pos), replace=False)
        return np.sort(np.concatenate([pos, draw]))

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        start, tokens, total_loss = time.perf_counter(), 0, 0.0
        chosen = self._epoch_pairs(self.rng)
        batches = [
            chosen[b]
            for b in bucketed_batches(self.train.lengths[chosen], self.cfg.batch_size, self.rng)
        ]
        self.optimizer.zero_grad(set_to_none=True)
        for i, idx in enumerate(batches):
            last = i + 1 == len(batches)
            loss, n_tokens = self.micro_step(idx, (i + 1) % self.cfg.grad_accum == 0 or last)
            total_loss += loss
            tokens += n_tokens
            every = max(1, len(batches) // self.progress_lines) if self.progress_lines else 0
            if every and (i + 1) % every == 0 and not last:
                rate = tokens / (time.perf_counter() - start)
                self.log(
                    f"    epoch {self.state.epoch}: batch {i + 1}/{len(batches)}  "
                    f"loss {total_loss / (i + 1):.4f}  {rate:.0f} tok/s"
                )
        seconds = time.perf_counter() - start
        return {
            "train_loss": total_loss / len(batches),
            "tokens_per_s": tokens / seconds,
            "epoch_seconds": seconds,
        }

    @torch.no_grad()
    def predict(self, enc: EncodedPairs) -> np.ndarray:
        """P(matched) for every pair of `enc`, in its order."""
        self.model.eval()
        scores = np.zeros(len(enc), dtype=np.float64)
        for idx in sorted_batches(enc.lengths, self.cfg.eval_batch_size):
            batch = collate(enc, idx, self.pad_id)
            with self._autocast():
                logits = self.model(
                    batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
                )
            scores[idx] = logits.float().softmax(-1)[:, 1].cpu().numpy()
        return scores

    def evaluate(self, enc: EncodedPairs) -> dict[str, float]:
        return classification_metrics(enc.labels, self.predict(enc), enc.criteria)

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> FoldState:
        """Train to cfg.epochs (from the current state: a restored checkpoint resumes)."""
        while self.state.epoch < self.cfg.epochs:
            metrics = self.step_epoch()
            if on_epoch is not None:
                on_epoch(metrics)
        if self.val is not None and self._best_params is not None:
            self._load_trainable(self._best_params)  # leave the model at its best epoch
        return self.state

    def step_epoch(self) -> dict:
        """Run one epoch (or, once stopped, re-report the best) and return its metrics."""
        s = self.state
        s.epoch += 1
        if s.stopped:
            return {**s.best_metrics, "epoch": s.epoch, "stopped_early": True}
        metrics: dict = {"epoch": s.epoch, **self.train_epoch()}
        if self.val is not None:
            val = self.evaluate(self.val)
            metrics |= {f"val_{k}": v for k, v in val.items()}
            improved = val["macro_f1"] > s.best_score
            if improved:
                s.best_score, s.best_epoch, s.bad_epochs = val["macro_f1"], s.epoch, 0
                self._best_params = self._trainable_state()
            else:
                s.bad_epochs += 1
            metrics |= {"best_val_macro_f1": s.best_score, "best_epoch": s.best_epoch}
            if improved:
                s.best_metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            if self.cfg.patience and s.bad_epochs >= self.cfg.patience:
                s.stopped = True
                self.log(
                    f"early stop after epoch {s.epoch}: best {s.best_score:.4f} "
                    f"at epoch {s.best_epoch}"
                )
        metrics["stopped_early"] = False
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

    # --- checkpoints (safetensors + JSON; no pickle) ---------------------------------------
    def _trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            n: p.detach().clone().cpu() for n, p in self.model.named_parameters() if p.requires_grad
        }

    def _load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device))

    def save_checkpoint(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"param/{k}": v for k, v in self._trainable_state().items()}
        if self._best_params is not None:
            tensors |= {f"best/{k}": v for k, v in self._best_params.items()}
        opt = self.optimizer.state_dict()
        for pid, pstate in opt["state"].items():
            for key, value in pstate.items():
                tensors[f"opt/{pid}/{key}"] = value.detach().contiguous().cpu()
        save_file(tensors, str(out / STATE_TENSORS))
        meta = {
            "fold_state": self.state.__dict__,
            "scheduler": self.scheduler.state_dict(),
            "param_groups": opt["param_groups"],
            "rng": self.rng.bit_generator.state,
        }
        (out / STATE_JSON).write_text(json.dumps(meta, default=_jsonable))

    def load_checkpoint(self, src_dir: str | Path) -> None:
        src = Path(src_dir)
        tensors = load_file(str(src / STATE_TENSORS))
        meta = json.loads((src / STATE_JSON).read_text())
        self._load_trainable({k[6:]: v for k, v in tensors.items() if k.startswith("param/")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
        self._best_params = best or None
        opt_state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("opt/"):
                _, pid, name = key.split("/", 2)
                opt_state.setdefault(int(pid), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        self.scheduler.load_state_dict(meta["scheduler"])
        self.rng.bit_generator.state = meta["rng"]
        self.state = FoldState(**meta["fold_state"])


def _jsonable(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
