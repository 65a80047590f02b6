"""The one-fold trainer on tiny-random: epochs reported, early stop, exact resume."""

import numpy as np
import pytest
import torch

from nli_tune.core.config import TrainConfig
from nli_tune.model.classifier import build_model
from nli_tune.training.fold_trainer import FoldTrainer
from tests.helpers import redsm5, unit_data

# Tiny-random mechanics settings shared by every test here (fp32: exact comparisons).
TINY = dict(model="tiny-random", num_layers=None, max_length=96, batch_size=4, precision="fp32")


def _toy(n_posts: int, seed: int):
    """Posts that say they cannot sleep (matched SLEEP_ISSUES, the sentence annotated) or
    not; a third of the rest deny it (an annotated status-0 sentence)."""
    rng = np.random.default_rng(seed)
    posts, rows = {}, []
    for i in range(n_posts):
        first = "My dog is great."
        if i % 3 == 0:
            first = "I cannot sleep at night."
            rows.append((f"p{i}", first, "SLEEP_ISSUES", 1))
        elif i % 3 == 1:
            first = "I sleep fine these days."
            rows.append((f"p{i}", first, "SLEEP_ISSUES", 0))
        posts[f"p{i}"] = first + " Work was fine today." * int(rng.integers(1, 4))
    return redsm5(posts, rows)


def _trainer(cfg, data):
    model, tok = build_model(cfg)
    units = unit_data(tok, data, cfg)
    posts = list(data.posts["post_id"])
    return FoldTrainer(cfg, model, units.subset(posts[:12]), units.subset(posts[12:]))


def test_reports_every_epoch_and_keeps_best_after_early_stop():
    data = _toy(18, 0)
    cfg = TrainConfig(
        **TINY,
        epochs=5,
        patience=1,
        lr=1e-9,
        seed=3,
    )
    trainer = _trainer(cfg, data)
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
        "val_roc_auc_within",
        "val_evidence_hit_at_1",
        "train_loss",
        "tokens_per_s",
    } <= set(seen[0])


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    data = _toy(18, 1)
    cfg = TrainConfig(
        **TINY,
        epochs=3,
        patience=0,
        lr=5e-3,
        seed=5,
        head_dropout=0.0,
    )
    torch.set_num_threads(1)
    full = _trainer(cfg, data)
    full_metrics = []
    full.fit(full_metrics.append)

    first = _trainer(cfg, data)
    first.step_epoch()
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = _trainer(cfg, data)
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
    data = _toy(30, 2)
    cfg = TrainConfig(
        **TINY,
        epochs=1,
        neg_ratio=1.5,
        seed=3,
    )
    trainer = _trainer(cfg, data)
    t = trainer.train
    first = trainer.evidence_examples(trainer.rng)
    second = trainer.evidence_examples(trainer.rng)
    n_pos = int((t.evidence == 1).sum())
    n_hard = int(t.hard.sum())
    assert n_pos > 0 and n_hard > 0
    for chosen in (first, second):
        labels = t.evidence[chosen[:, 0], chosen[:, 1]]
        assert (labels == 1).sum() == n_pos  # every evidence unit, every epoch
        assert (labels == 0).sum() == int(np.ceil(1.5 * n_pos))
        n_neg = int(np.ceil(1.5 * n_pos))
        is_hard = t.hard[chosen[:, 0], chosen[:, 1]]
        assert is_hard.sum() == min(n_hard, n_neg)  # annotated absences come first
        # Then half of the rest: units that are evidence for another criterion.
        cross = (labels == 0) & ~is_hard & (t.evidence[chosen[:, 0]] == 1).any(axis=1)
        assert cross.sum() == min(trainer.n_cross, (n_neg - min(n_hard, n_neg) + 1) // 2)
        assert trainer.n_cross == 8 * n_pos  # each SLEEP evidence unit x the 8 others
        assert len({tuple(x) for x in chosen}) == len(chosen)
    assert {tuple(x) for x in first} != {tuple(x) for x in second}  # redrawn each epoch
    # the loss weights see the subsampled balance (1.5 : 1), not the full one
    w = trainer.loss_fn.weight
    assert w[1] / w[0] == pytest.approx(np.ceil(1.5 * n_pos) / n_pos)
    # An epoch keeps the examples it trained on: its seeded draw, the first from its rng.
    fresh = _trainer(cfg, data)
    fresh.train_epoch()
    assert np.array_equal(fresh.last_examples, first)


@pytest.mark.parametrize("aggregate", ["max", "topk"])
def test_mil_loss_through_the_best_units_equals_the_full_bag_loss(aggregate):
    """With max or top-k (k <= MIL_UNITS) aggregation, re-running only each bag's best units
    with gradient gives exactly the loss over all of the bag's units."""
    data = _toy(30, 4)
    cfg = TrainConfig(
        **TINY, epochs=1, evidence_weight=0.0, aggregate=aggregate, topk=2, head_dropout=0.0
    )
    trainer = _trainer(cfg, data)
    bags = trainer._mil_bags(trainer.rng)
    labels = trainer.train.post_labels
    n_pos = int(labels.sum())
    assert len(bags) == n_pos + int(np.ceil(cfg.neg_ratio * n_pos))
    assert labels[bags[:, 0], bags[:, 1]].sum() == n_pos  # every matched bag
    with torch.no_grad():  # a bare score of every unit: the reference
        full = trainer.score_posts(trainer.train).logits[bags[:, 0], bags[:, 1]]
    y = torch.as_tensor(labels[bags[:, 0], bags[:, 1]], dtype=torch.float32)
    pos_weight = torch.tensor((len(bags) - n_pos) / n_pos).clamp(min=1.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(full, dtype=torch.float32), y, pos_weight=pos_weight
    )
    trainer.model.eval()  # no dropout anywhere: the two passes see the same network
    loss, _ = trainer.mil_step(bags)
    assert loss == pytest.approx(float(expected), rel=1e-4)


def test_unscored_epochs_train_without_scoring_and_patience_counts_scored_ones():
    """A search scores only the epochs its scheduler judges: an unscored epoch trains
    (the weights move) but calls no scoring and leaves the early-stop count alone."""
    cfg = TrainConfig(**TINY, epochs=4, patience=1, lr=1e-9, seed=3)
    trainer = _trainer(cfg, _toy(18, 0))
    first = trainer.step_epoch(score=True)
    assert first["scored"] and "val_macro_f1" in first
    passes = trainer.state.score_passes
    assert passes == 2  # the calibration posts, then the validation posts
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.cfg = TrainConfig(**(cfg.to_dict() | {"lr": 1e-2}))
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-2
    second = trainer.step_epoch(score=False)
    assert not second["scored"] and not any(k.startswith("val_") for k in second)
    assert trainer.state.score_passes == passes and trainer.state.bad_epochs == 0
    moved = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad
        and not torch.equal(p, before[n])
    ]  # fmt: skip
    assert moved  # it trained
    third = trainer.step_epoch(score=True)
    assert third["scored"] and trainer.state.score_passes == passes + 2
    assert [h["scored"] for h in trainer.state.history] == [True, False, True]
