"""Our one-fold trainer against `transformers.Trainer`, the loop a user would otherwise use.

Both sides train the same model (two `build_model(cfg)` calls: same seed, same weights) on
the same fold, the same (unit, criterion) examples, the same AdamW groups, warm-up schedule,
class-weighted loss, gradient clipping and precision, and are scored by the same code on
the fold's validation posts. Only the loop differs: ours batches each epoch's examples in
length buckets and assembles pairs from token ids; `transformers.Trainer` gets the examples
ours drew as a dataset, `train_sampling_strategy="group_by_length"` (what
`group_by_length=True` became in transformers 5) and a collator that pads like ours.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter

import numpy as np
import torch
from torch import nn

from nli_tune.core.config import TrainConfig
from nli_tune.model.classifier import build_model
from nli_tune.pairs.encoding import UnitData, collate, pair_lengths
from nli_tune.redsm5.folds import FoldPlan
from nli_tune.training.fold_trainer import MAX_GRAD_NORM, FoldTrainer


class LossInForward(nn.Module):
    """Our PairClassifier with its loss inside `forward`, as `transformers.Trainer` expects;
    counts the real tokens it trained on."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.tokens = 0  # real (non-pad) tokens of the training forwards

    def forward(self, input_ids, attention_mask, unit_mask, labels):
        logits, _ = self.model.score(input_ids, attention_mask, unit_mask)
        if self.training:
            self.tokens += int(attention_mask.sum())
        return {"loss": self.loss_fn(logits.float(), labels), "logits": logits}


def compare_with_hf_trainer(
    cfg: TrainConfig, train: UnitData, val: UnitData, device: str = "cpu"
) -> dict[str, float]:
    """Train one fold for cfg.epochs with each loop; their real tokens/s, the ratio, and
    each one's validation macro-F1 (no calibration: it would add a fit to one side only)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    if cfg.evidence_weight != 1:
        raise ValueError(f"evidence_weight {cfg.evidence_weight}: the comparison covers 1 only")
    if cfg.pairing != "nli":  # LossInForward trains the 2-class head of an nli pair
        raise ValueError(f"pairing {cfg.pairing!r}: the comparison covers nli only")
    cfg = dataclasses.replace(cfg, calibration="none", patience=0)
    ours = FoldTrainer(cfg, build_model(cfg, tokenizer=False)[0], train, val, device)
    drawn: list[np.ndarray] = []  # the examples each of our epochs trained on, in order
    seconds = tokens = 0.0
    for _ in range(cfg.epochs):
        m = ours.train_epoch()
        drawn.append(ours.last_examples)
        seconds += m["epoch_seconds"]
        tokens += round(m["tokens_per_s"] * m["epoch_seconds"])  # an integer count
    examples = np.concatenate(drawn)

    # The HF side: a second FoldTrainer on a fresh copy of the model lends it the same
    # optimizer, schedule (sized for the same number of steps) and loss; HF runs the loop.
    peer = FoldTrainer(cfg, build_model(cfg, tokenizer=False)[0], train, val, device)
    wrapped = LossInForward(peer.model, peer.loss_fn)
    seen: list[tuple[int, int]] = []
    padded = [0]  # tokens HF's batches run, padding included

    def collator(items: list[dict]) -> dict[str, torch.Tensor]:
        units = np.array([it["unit"] for it in items])
        crits = np.array([it["crit"] for it in items])
        seen.extend(zip(units.tolist(), crits.tolist(), strict=True))
        batch = collate(train, units, crits)
        padded[0] += batch["input_ids"].numel()
        batch["labels"] = torch.from_numpy(train.evidence[units, crits].astype(np.int64))
        return batch

    lengths = pair_lengths(train, examples[:, 0], examples[:, 1])
    dataset = [  # input_ids only for the length sampler: it measures each example by them
        {"input_ids": [0] * int(n), "unit": int(u), "crit": int(c)}
        for (u, c), n in zip(examples, lengths, strict=True)
    ]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=1,  # one pass over every epoch's draw, as ours made them
            max_grad_norm=MAX_GRAD_NORM,  # as ours clips
            bf16=ours.amp == torch.bfloat16,
            use_cpu=torch.device(device).type == "cpu",
            seed=cfg.seed,
            train_sampling_strategy="group_by_length",
            dataloader_num_workers=0,  # ours assembles batches in the training process too
            remove_unused_columns=False,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        hf = Trainer(
            model=wrapped,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            optimizers=(peer.optimizer, peer.scheduler),
        )
        hf.remove_callback(PrinterCallback)  # it prints the run's summary dict to stdout
        hf_seconds = hf.train().metrics["train_runtime"]
    if Counter(seen) != Counter(map(tuple, examples.tolist())):
        raise RuntimeError("transformers.Trainer did not train on the examples ours did")
    ours_f1 = ours.evaluate(val)["macro_f1"]
    peer_f1 = peer.evaluate(val)["macro_f1"]
    return {
        "trainer_tokens": tokens,
        "hf_trainer_tokens": float(wrapped.tokens),
        "trainer_examples": float(len(examples)),
        "trainer_steps": float(ours.scheduler.last_epoch),  # optimizer steps each loop took
        "hf_trainer_steps": float(peer.scheduler.last_epoch),
        "trainer_tokens_per_s_fold": tokens / seconds,
        "hf_trainer_tokens_per_s": wrapped.tokens / hf_seconds,
        "trainer_speedup_vs_hf": (tokens / seconds) / (wrapped.tokens / hf_seconds),
        "hf_trainer_padding_efficiency": wrapped.tokens / padded[0],
        "trainer_macro_f1": ours_f1,
        "hf_trainer_macro_f1": peer_f1,
        "trainer_f1_gap": abs(ours_f1 - peer_f1),
    }


def fold_epoch_seconds(
    cfg: TrainConfig, units: UnitData, plan: FoldPlan, threads: int
) -> list[float]:
    """Each fold's first epoch, one fold after another in this process on `threads` torch
    threads: its compute seconds (training, calibration, scoring its validation posts),
    as a fold worker counts them."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = []
        for k in range(len(plan.val_folds)):
            train_posts, val_posts = plan.fold(k)
            model = build_model(cfg, tokenizer=False)[0]
            trainer = FoldTrainer(cfg, model, units.subset(train_posts), units.subset(val_posts))
            seconds.append(trainer.step_epoch()["compute_seconds"])
        return seconds
    finally:
        torch.set_num_threads(before)
