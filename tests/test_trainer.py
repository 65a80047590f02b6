"""The one-fold trainer on tiny-random: epochs reported, early stop, exact resume."""

import numpy as np
import pandas as pd
import pytest
import torch

from nli_tune.config import TrainConfig
from nli_tune.encoding import encode_pairs
from nli_tune.model import build_model
from nli_tune.trainer import FoldTrainer

# Tiny-random mechanics settings shared by every test here (fp32: exact comparisons).
TINY = dict(model="tiny-random", num_layers=None, max_length=96, batch_size=4, precision="fp32")


def _toy(n_posts: int, seed: int):
    """Posts that mention sleep (matched SLEEP_ISSUES) or not; 9 criteria each."""
    rng = np.random.default_rng(seed)
    texts, rows = {}, []
    for i in range(n_posts):
        sleepless = i % 3 == 0
        texts[f"p{i}"] = ("I cannot sleep at night. " if sleepless else "My dog is great. ") + (
            "Work was fine today. " * int(rng.integers(1, 4))
        )
        rows += [(f"p{i}", "SLEEP_ISSUES", int(sleepless)), (f"p{i}", "FATIGUE", 0)]
    return texts, pd.DataFrame(rows, columns=["post_id", "criterion", "label"])


def _trainer(cfg, texts, pairs):
    model, tok = build_model(cfg)
    enc = encode_pairs(tok, texts, pairs, cfg.max_length)
    posts = list(dict.fromkeys(pairs["post_id"]))
    return FoldTrainer(cfg, model, enc.subset(posts[:12]), enc.subset(posts[12:]), tok.pad_token_id)


def test_reports_every_epoch_and_keeps_best_after_early_stop():
    texts, pairs = _toy(18, 0)
    cfg = TrainConfig(
        **TINY,
        epochs=5,
        patience=1,
        lr=1e-9,
        seed=3,
    )
    trainer = _trainer(cfg, texts, pairs)
    seen = []
    state = trainer.fit(seen.append)
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4, 5]
    # lr ~ 0: scores never improve after epoch 1, so patience 1 stops it after epoch 2
    assert state.stopped and seen[1]["stopped_early"] is False and seen[2]["stopped_early"]
    for m in seen[2:]:
        assert m["val_macro_f1"] == pytest.approx(state.best_score)
    assert {
        "val_macro_f1",
        "val_roc_auc",
        "val_pr_auc",
        "val_f1_SLEEP_ISSUES",
        "train_loss",
        "tokens_per_s",
    } <= set(seen[0])


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    texts, pairs = _toy(18, 1)
    cfg = TrainConfig(
        **TINY,
        epochs=3,
        patience=0,
        lr=5e-3,
        seed=5,
        head_dropout=0.0,
    )
    torch.set_num_threads(1)
    full = _trainer(cfg, texts, pairs)
    full_metrics = []
    full.fit(full_metrics.append)

    first = _trainer(cfg, texts, pairs)
    first.step_epoch()
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = _trainer(cfg, texts, pairs)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.state.epoch == 1
    # A resumed search worker re-reports the restored epoch from this history: every
    # reported metric (val_f1_matched included) must be there, per-criterion F1s need not.
    restored = resumed.state.history[-1]
    assert restored["val_f1_matched"] == pytest.approx(full_metrics[0]["val_f1_matched"])
    assert not [k for k in restored if k.startswith("val_f1_") and k != "val_f1_matched"]
    resumed_metrics = []
    resumed.fit(resumed_metrics.append)
    assert [m["epoch"] for m in resumed_metrics] == [2, 3]
    assert resumed_metrics[-1]["train_loss"] == pytest.approx(
        full_metrics[-1]["train_loss"], rel=1e-4
    )
    a = dict(full.model.named_parameters())
    for n, p in resumed.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, a[n], atol=1e-5), n


def test_neg_ratio_draws_all_matched_and_fresh_unmatched_pairs():
    texts, pairs = _toy(30, 2)
    cfg = TrainConfig(
        **TINY,
        epochs=1,
        neg_ratio=1.5,
        seed=3,
    )
    trainer = _trainer(cfg, texts, pairs)
    labels = trainer.train.labels
    first = trainer._epoch_pairs(trainer.rng)
    second = trainer._epoch_pairs(trainer.rng)
    n_pos = int(labels.sum())
    for chosen in (first, second):
        assert labels[chosen].sum() == n_pos  # every matched pair, every epoch
        assert (labels[chosen] == 0).sum() == int(np.ceil(1.5 * n_pos))
        assert len(set(chosen)) == len(chosen)
    assert set(first) != set(second)  # negatives are re-drawn each epoch
    # the loss weights see the subsampled balance (1.5 : 1), not the full one
    w = trainer.loss_fn.weight
    assert w[1] / w[0] == pytest.approx(1.5)
