"""The training config: one typed dataclass shared by `train`, the search and its export.

Every key has a default with a one-line comment giving its meaning and unit. Unknown keys
are rejected so that a typo in a config or search space fails loudly instead of silently
training the default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nli_tune.core.errors import UserError

POOLINGS = ("mean", "cls", "max", "attention")
ATTENTIONS = ("bidirectional", "causal")
PAIR_ORDERS = ("criterion_first", "post_first")
PRECISIONS = ("auto", "bf16", "fp32")
UNITS = ("post", "sentence", "window")
AGGREGATES = ("max", "lse", "topk", "attention")
DORA_TARGETS = ("attention", "attention_mlp")
CALIBRATIONS = ("holdout", "per_criterion", "none")
HYPOTHESES = ("description", "name")
PAIRINGS = ("nli", "multilabel")
# Keys a config file may carry besides the training keys: the search's export writes its
# results there, and `train` must consume that file unchanged.
METADATA_KEYS = ("search",)


@dataclass
class TrainConfig:
    # --- model ---
    model: str = (
        "gemma-3-270m"  # preset (gemma-3-270m | tiny-random), HF id or local checkpoint dir
    )
    num_layers: int | None = None  # keep only the first N decoder layers; null = all of them
    attention: str = "bidirectional"  # bidirectional | causal (the ablation)
    pooling: str = "mean"  # mean | cls | max | attention: token vectors -> one pair vector
    rank: int = 16  # DoRA rank r on the dora_targets projections
    adapt_layers: int | None = None  # DoRA on the top N decoder layers only; null = all
    dora_targets: str = "attention"  # attention (q/k/v/o) | attention_mlp (+ gate/up/down)
    alpha: float = 32.0  # DoRA scaling numerator (scale = alpha / rank)
    head_dropout: float = 0.1  # dropout before the linear head (adapters use none: it costs +33%)
    max_length: int = 128  # tokens per (unit, criterion) pair; longer units are split, posts cut
    pair_order: str = "criterion_first"  # criterion_first | post_first: which text leads the pair
    hypothesis: str = "description"  # NLI hypothesis: description (~20 tokens) | name (2-4)
    pairing: str = "multilabel"  # multilabel: a pass per unit -> 9 logits | nli: a pass per pair
    # --- evidence level: the premise is a unit of the post, scores aggregate to the post ---
    unit: str = "sentence"  # post (whole post, truncated: the ablation) | sentence | window
    window_sentences: int = 3  # unit: window: consecutive sentences per window
    window_stride: int = 2  # unit: window: sentences between window starts (<= window_sentences)
    aggregate: str = "max"  # unit scores -> post score: max | lse | topk | attention (MIL)
    topk: int = 2  # aggregate: topk: mean of the k best units' logits
    evidence_weight: float = 1.0  # loss = w * unit-evidence loss + (1 - w) * post-level MIL loss
    calibration: str = (
        "holdout"  # holdout: Platt + threshold on held-out train posts | per_criterion | none
    )
    calibration_fraction: float = 0.2  # share of training posts held out for calibration
    # --- the learned-fit rule (training/learned.py): a fit that fails both is retried ---
    learned_loss_ratio: float = (
        0.5  # a fit learned if its last epoch's train loss <= this x its first's
    )
    learned_calib_auc: float = (
        0.6  # ... and its calibration posts' within-criterion ROC-AUC >= this
    )
    # --- optimisation ---
    lr: float = 1.5e-3  # peak AdamW learning rate for adapters, pooler and head
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_ratio: float = 0.1  # fraction of optimizer steps spent warming the LR up from 0
    batch_size: int = 16  # pairs (multilabel: units) per optimizer step, before accumulation
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    epochs: int = 8  # passes over the training examples
    patience: int = 2  # scored epochs without val macro-F1 gain before a fold stops (0 = never)
    class_weights: bool = True  # weight the loss by inverse class frequency of the train split
    neg_ratio: float | None = 1.0  # negatives drawn per positive example each epoch; null = all
    grad_checkpointing: bool = False  # trade compute for memory in the backbone
    precision: str = "auto"  # auto (bf16 on CUDA / bf16-capable CPUs, else fp32) | bf16 | fp32
    eval_batch_size: int = 32  # pairs (multilabel: units) per forward pass when scoring
    # --- data ---
    data_dir: str | None = None  # ReDSM5 directory; null = the bundled synthetic sample
    test_fraction: float = 0.15  # share of posts held out for the final test, never searched
    folds: int = 3  # post-grouped CV folds used by the search
    split_seed: int = 13  # seeds the test split, the CV folds and the calibration posts
    seed: int = 13  # seeds the fit: adapter init, example sampling, shuffling
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # free-form notes, logged

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise UserError(f"config key '{key}' = {getattr(self, key)!r}: {what}")

        need(self.pooling in POOLINGS, "pooling", f"must be one of {', '.join(POOLINGS)}")
        need(self.attention in ATTENTIONS, "attention", f"must be one of {', '.join(ATTENTIONS)}")
        need(
            self.pair_order in PAIR_ORDERS,
            "pair_order",
            f"must be one of {', '.join(PAIR_ORDERS)}",
        )
        need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        for key, allowed in (
            ("unit", UNITS),
            ("aggregate", AGGREGATES),
            ("dora_targets", DORA_TARGETS),
            ("calibration", CALIBRATIONS),
            ("hypothesis", HYPOTHESES),
            ("pairing", PAIRINGS),
        ):
            need(getattr(self, key) in allowed, key, f"must be one of {', '.join(allowed)}")
        need(
            _is_num(self.evidence_weight) and 0 <= self.evidence_weight <= 1,
            "evidence_weight",
            "must be in [0, 1]",
        )
        need(
            _is_num(self.calibration_fraction) and 0 < self.calibration_fraction < 0.5,
            "calibration_fraction",
            "must be in (0, 0.5)",
        )
        need(
            _is_num(self.learned_loss_ratio) and self.learned_loss_ratio > 0,
            "learned_loss_ratio",
            "must be a positive number (1 or more: any fit whose loss did not rise)",
        )
        need(
            _is_num(self.learned_calib_auc) and 0 <= self.learned_calib_auc <= 1,
            "learned_calib_auc",
            "must be in [0, 1]",
        )
        for key in ("num_layers", "adapt_layers"):
            value = getattr(self, key)
            need(
                value is None or _is_int(value) and value >= 1,
                key,
                "must be a positive integer or null",
            )
        positive = ("rank", "batch_size", "grad_accum", "epochs", "eval_batch_size", "folds")
        for key in positive + ("window_sentences", "window_stride", "topk"):
            need(
                _is_int(getattr(self, key)) and getattr(self, key) >= 1,
                key,
                "must be a positive integer",
            )
        need(_is_int(self.patience) and self.patience >= 0, "patience", "must be an integer >= 0")
        need(
            not _is_int(self.window_stride)
            or not _is_int(self.window_sentences)
            or self.window_stride <= self.window_sentences,
            "window_stride",
            f"must be <= window_sentences ({self.window_sentences}) to cover every sentence",
        )
        need(
            _is_int(self.max_length) and self.max_length >= 16,
            "max_length",
            "must be an integer >= 16",
        )
        need(_is_num(self.lr) and self.lr > 0, "lr", "must be a positive number")
        need(_is_num(self.alpha) and self.alpha > 0, "alpha", "must be a positive number")
        need(_is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(
            _is_num(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
            "warmup_ratio",
            "must be in [0, 1)",
        )
        need(
            self.neg_ratio is None or _is_num(self.neg_ratio) and self.neg_ratio > 0,
            "neg_ratio",
            "must be a positive number or null",
        )
        need(
            _is_num(self.head_dropout) and 0 <= self.head_dropout < 1,
            "head_dropout",
            "must be in [0, 1)",
        )
        need(
            _is_num(self.test_fraction) and 0 < self.test_fraction < 0.5,
            "test_fraction",
            "must be in (0, 0.5)",
        )
        need(_is_int(self.seed), "seed", "must be an integer")
        need(_is_int(self.split_seed), "split_seed", "must be an integer")
        need(
            isinstance(self.model, str) and self.model != "", "model", "must be a non-empty string"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        unknown = sorted(set(values) - set(cls.keys()) - set(METADATA_KEYS))
        if unknown:
            raise UserError(
                f"{source}: unknown config key '{unknown[0]}' (known keys: {', '.join(cls.keys())})"
            )
        known = {k: v for k, v in values.items() if k not in METADATA_KEYS}
        # YAML reads 1e-3 as a string; accept numeric strings for float keys.
        for f in fields(cls):
            if f.name in known and "float" in f.type and isinstance(known[f.name], str):
                try:
                    known[f.name] = float(known[f.name])
                except ValueError:
                    raise UserError(
                        f"{source}: config key '{f.name}' = {known[f.name]!r}: must be a number"
                    ) from None
        try:
            return cls(**known)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_mapping(path), source=str(path))

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        data = self.to_dict()
        if metadata:
            data.update(metadata)
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{p}: not UTF-8 (byte {err.start})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: must hold a mapping of config keys, got {type(data).__name__}")
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
