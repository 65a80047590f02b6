"""The cheaper units on tiny-random: `hypothesis: name` and `pairing: multilabel` train,
calibrate, save, load and predict end to end; multilabel scores a unit in one pass."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nli_tune import SAMPLE_DIR
from nli_tune.core.config import TrainConfig
from nli_tune.evaluation.scoring import score_posts
from nli_tune.model.classifier import build_model, load_model, save_model
from nli_tune.pairs.encoding import collate, pair_format
from nli_tune.redsm5.load import criteria
from nli_tune.training.fold_trainer import FoldTrainer
from tests.conftest import run_train
from tests.helpers import redsm5, unit_data
from tests.test_predict import _predict_posts
from tests.test_train import assert_no_post_text
from tests.test_trainer import _toy

TINY = dict(
    model="tiny-random", num_layers=None, max_length=96, precision="fp32", seed=3, pairing="nli"
)
SLEEP = [c.key for c in criteria()].index("SLEEP_ISSUES")


def _units(cfg: TrainConfig, n_posts: int = 9):
    model, tok = build_model(cfg)
    return model, tok, unit_data(tok, _toy(n_posts, 0), cfg)


def _count_rows(model):
    """Wrap model.score to record the batch shape of every forward pass."""
    shapes, score = [], model.score

    def counted(input_ids, *args, **kwargs):
        shapes.append(tuple(input_ids.shape))
        return score(input_ids, *args, **kwargs)

    model.score = counted
    return shapes


@pytest.mark.parametrize("pairing", ["nli", "multilabel"])
def test_scoring_passes_per_unit(pairing):
    cfg = TrainConfig(**(TINY | {"pairing": pairing}), eval_batch_size=8)
    model, _, data = _units(cfg)
    shapes = _count_rows(model)
    scored = score_posts(model, data, "max", 2, 8, torch.device("cpu"), None)
    n_units = int((~data.external).sum())
    rows = sum(s[0] for s in shapes)
    # multilabel: every unit read once for all 9 criteria; nli: once per criterion.
    assert rows == (n_units if pairing == "multilabel" else 9 * n_units)
    assert len(shapes) == -(-rows // 8)
    if pairing == "multilabel":  # each pass is the unit alone: bos + unit + eos
        assert max(s[1] for s in shapes) == int(data.lengths.max()) + 2
    assert scored.logits.shape == (len(data.posts), 9) and np.isfinite(scored.logits).all()


def test_name_hypothesis_pairs_are_shorter():
    cfg = TrainConfig(**TINY)
    _, tok = build_model(cfg)
    fmt = pair_format(tok)
    for c, crit in enumerate(criteria()):
        assert fmt.names[c] == tuple(tok.encode(crit.name, add_special_tokens=False))
        assert fmt.criteria[c] == tuple(tok.encode(crit.description, add_special_tokens=False))
    for order in ("criterion_first", "post_first"):
        name, desc = fmt.overhead(order, "name"), fmt.overhead(order, "description")
        text = np.array([len(fmt.criteria[c]) - len(fmt.names[c]) for c in range(9)])
        assert (name < desc).all() and (desc - name == text).all()
        assert (fmt.overhead(order, pairing="multilabel") == 2).all()  # bos + eos only
    # The same unit paired with SLEEP_ISSUES, token by token: the name version is shorter by
    # exactly the difference between the two texts' token counts.
    posts = {"a": "I cannot sleep at night."}
    lengths = {}
    for hyp in ("description", "name"):
        data = unit_data(tok, redsm5(posts), TrainConfig(**TINY, hypothesis=hyp))
        ids = collate(data, np.array([0]), np.array([SLEEP]))["input_ids"][0].tolist()
        assert ids[1 : 1 + len(fmt.hypothesis(SLEEP, hyp))] == list(fmt.hypothesis(SLEEP, hyp))
        lengths[hyp] = len(ids)
    assert lengths["description"] - lengths["name"] == len(fmt.criteria[SLEEP]) - len(
        fmt.names[SLEEP]
    )
    # min_length still fits the longest text of either kind, in either order.
    longest = max(map(len, fmt.criteria + fmt.names))
    assert fmt.min_length() >= longest + 8 + len(fmt.bos) + len(fmt.eos)


@pytest.mark.parametrize("aggregate", ["max", "attention"])
def test_multilabel_trains_with_the_post_level_loss(aggregate):
    cfg = TrainConfig(
        **(TINY | {"pairing": "multilabel"}), evidence_weight=0.5, aggregate=aggregate, batch_size=4
    )
    model, _, data = _units(cfg, 18)
    posts = list(data.posts)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = FoldTrainer(cfg, model, data.subset(posts[:12]), data.subset(posts[12:]))
    metrics = trainer.step_epoch()
    assert np.isfinite(metrics["train_loss"]) and 0 <= metrics["val_macro_f1"] <= 1
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # it trained
    assert model.head.out_features == 9 and model.attend.out_features == 9


def test_saved_multilabel_model_loads_with_the_same_scores(tmp_path):
    cfg = TrainConfig(**(TINY | {"pairing": "multilabel"}), hypothesis="name")
    model, _, data = _units(cfg)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # make the head differ from a fresh (zero) init
        model.attend.weight.normal_(0, 0.5)
    save_model(model, cfg, tmp_path / "m")
    saved = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert (saved["pairing"], saved["hypothesis"]) == ("multilabel", "name")
    loaded, _, cfg2 = load_model(tmp_path / "m")
    assert cfg2 == cfg and loaded.head.out_features == 9
    cpu = torch.device("cpu")
    for how in ("max", "attention"):
        a = score_posts(model, data, how, 2, 8, cpu, None)
        b = score_posts(loaded, data, how, 2, 8, cpu, None)
        assert np.abs(a.logits).max() > 1e-3  # a non-trivial head, so equality means something
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
        assert (a.top_unit == b.top_unit).all()
    nli = TrainConfig(**TINY)  # the other head cannot score units assembled for multilabel
    with pytest.raises(ValueError, match="pairing 'nli' but units assembled for 'multilabel'"):
        score_posts(build_model(nli)[0], data, "max", 2, 8, cpu, None)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [("pairing", "multi", "nli, multilabel"), ("hypothesis", "title", "description, name")],
)
def test_bad_value_exits_2_with_one_line(tmp_path, key, value, allowed):
    (tmp_path / "cfg.yaml").write_text(f"{key}: {value}\n")
    r = run_train(
        "--config", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "out"), timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'cfg.yaml'}: config key '{key}' = '{value}': must be one of {allowed}"
    ]


@pytest.mark.parametrize(
    "setting", [{"hypothesis": "name"}, {"pairing": "multilabel"}], ids=["name", "multilabel"]
)
def test_train_calibrate_predict_end_to_end(tmp_path, setting):
    """The default (description, nli) runs end to end in test_train / test_predict."""
    cfg = {**TINY, "epochs": 1, "batch_size": 32, **setting}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    r = run_train("--config", str(tmp_path / "cfg.yaml"), "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibration"]["method"] == "platt" and metrics["calibration"]["posts"] > 0
    assert 0 <= metrics["test"]["macro_f1"] <= 1
    saved = yaml.safe_load((out / "model" / "config.yaml").read_text())
    assert {k: saved[k] for k in setting} == setting
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 9 * preds["post_id"].nunique() == metrics["data"]["test_pairs"]
    # predict on the saved model reproduces train's own test scores
    _, r = _predict_posts(out, tmp_path, "--batch-posts", "5", post_ids=preds["post_id"])
    assert r.returncode == 0, r.stderr[-2000:]
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    both = preds.merge(scores, on=["post_id", "criterion"], suffixes=("_train", "_predict"))
    assert len(both) == len(scores) == len(preds)
    assert (both["score_train"] - both["score_predict"]).abs().max() < 1e-4
    assert (both["evidence_start_train"] == both["evidence_start_predict"]).all()
    assert_no_post_text(out, SAMPLE_DIR)
    assert_no_post_text(tmp_path / "out", SAMPLE_DIR)
