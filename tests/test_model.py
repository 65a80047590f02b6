"""Encoding, poolers, DoRA wiring and save/load on the tiny-random preset (mechanics only)."""

import numpy as np
import pandas as pd
import pytest
import torch

from nli_tune.config import TrainConfig
from nli_tune.data import criteria
from nli_tune.encoding import POST_FIRST_SEPARATOR, SEPARATOR, collate, encode_pairs
from nli_tune.errors import UserError
from nli_tune.model import Pooler, build_model, load_model, parameter_counts, save_model

TINY = dict(model="tiny-random", num_layers=None, max_length=96, seed=1)


@pytest.fixture(scope="module")
def tiny():
    cfg = TrainConfig(**TINY, pooling="attention", rank=4)
    return cfg, *build_model(cfg)


def test_truncates_only_the_post(tiny):
    _, _, tok = tiny
    long_post = "I walked the dog and then I went to work again. " * 40
    pairs = pd.DataFrame(
        {"post_id": ["a", "a"], "criterion": ["FATIGUE", "SLEEP_ISSUES"], "label": [1, 0]}
    )
    enc = encode_pairs(tok, {"a": long_post}, pairs, max_length=96)
    for ids, key in zip(enc.input_ids, enc.criteria, strict=True):
        assert len(ids) == 96
        desc = next(c.description for c in criteria() if c.key == key)
        head = (
            [tok.bos_token_id]
            + tok.encode(desc, add_special_tokens=False)
            + tok.encode(SEPARATOR, add_special_tokens=False)
        )
        assert list(ids[: len(head)]) == head  # the whole criterion survives
        assert ids[-1] == tok.eos_token_id
        post = tok.encode(long_post, add_special_tokens=False)
        assert list(ids[len(head) : -1]) == post[: 96 - len(head) - 1]  # the post's start
    short = encode_pairs(tok, {"a": "I am tired."}, pairs, max_length=96)
    assert len(short.input_ids[0]) < 64
    with pytest.raises(UserError, match="max_length 20: too short"):
        encode_pairs(tok, {"a": long_post}, pairs, max_length=20)


def test_post_first_keeps_the_whole_criterion_at_the_end(tiny):
    _, _, tok = tiny
    long_post = "I walked the dog and then I went to work again. " * 40
    pairs = pd.DataFrame(
        {"post_id": ["a", "a"], "criterion": ["FATIGUE", "SLEEP_ISSUES"], "label": [1, 0]}
    )
    enc = encode_pairs(tok, {"a": long_post}, pairs, max_length=96, order="post_first")
    post = tok.encode(long_post, add_special_tokens=False)
    for ids, key in zip(enc.input_ids, enc.criteria, strict=True):
        desc = next(c.description for c in criteria() if c.key == key)
        tail = (
            tok.encode(POST_FIRST_SEPARATOR, add_special_tokens=False)
            + tok.encode(desc, add_special_tokens=False)
            + [tok.eos_token_id]
        )
        assert len(ids) == 96 and ids[0] == tok.bos_token_id
        assert list(ids[-len(tail) :]) == tail  # the whole criterion survives, last
        assert list(ids[1 : -len(tail)]) == post[: 96 - 1 - len(tail)]  # the post's start
    # Same pair, other order: same tokens but for the separator, rearranged.
    other = encode_pairs(tok, {"a": "I am tired."}, pairs, max_length=96)
    first = encode_pairs(tok, {"a": "I am tired."}, pairs, max_length=96, order="post_first")
    sep_a = len(tok.encode(SEPARATOR, add_special_tokens=False))
    sep_b = len(tok.encode(POST_FIRST_SEPARATOR, add_special_tokens=False))
    assert len(first.input_ids[0]) - len(other.input_ids[0]) == sep_b - sep_a


def test_collate_pads_on_the_right(tiny):
    _, _, tok = tiny
    pairs = pd.DataFrame(
        {"post_id": ["a", "b"], "criterion": ["FATIGUE", "FATIGUE"], "label": [1, 0]}
    )
    enc = encode_pairs(tok, {"a": "tired", "b": "so very tired all day every day"}, pairs, 96)
    batch = collate(enc, np.array([0, 1]), tok.pad_token_id)
    mask = batch["attention_mask"]
    n0 = len(enc.input_ids[0])
    assert mask[0, :n0].all() and not mask[0, n0:].any()
    assert (batch["input_ids"][0, n0:] == tok.pad_token_id).all()
    assert batch["input_ids"][0, 0] == tok.bos_token_id


@pytest.mark.parametrize("kind", ["mean", "cls", "max", "attention"])
def test_poolers_ignore_padding(kind):
    torch.manual_seed(0)
    pool = Pooler(kind, 8)
    if pool.query is not None:
        torch.nn.init.normal_(pool.query)
    states = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = pool(states, mask)
    noisy = states.clone()
    noisy[0, 3:] = 1e4  # garbage at padded positions
    assert torch.allclose(pool(noisy, mask), out)
    ref = {"mean": states[0, :3].mean(0), "cls": states[0, 0], "max": states[0, :3].amax(0)}
    if kind in ref:
        assert torch.allclose(out[0], ref[kind], atol=1e-6)


def test_dora_on_qkvo_and_trainable_counts(tiny):
    _, model, _ = tiny
    names = [n for n, _ in model.named_parameters()]
    mags = [n for n in names if "lora_magnitude_vector" in n]
    assert mags, "DoRA magnitude vectors missing: use_dora not applied"
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert any(proj in n for n in mags)
    assert not any("mlp" in n for n in names if "lora_" in n)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith(("head.", "pooler.", "norm.")) for n in trainable)
    counts = parameter_counts(model)
    assert 0 < counts["trainable_params"] < counts["total_params"]
    assert "head.weight" in trainable and "pooler.query" in trainable


def test_save_load_roundtrip_safetensors_only(tiny, tmp_path):
    cfg, model, tok = tiny
    with torch.no_grad():
        model.head.weight.add_(0.5)  # make the head differ from a fresh init
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    save_model(model, cfg, tmp_path / "m")
    files = {p.suffix for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json", ".yaml", ".md"}, files
    loaded, _, cfg2 = load_model(tmp_path / "m")
    assert cfg2 == cfg
    ids = torch.tensor([[tok.bos_token_id, 5, 6, 7, tok.eos_token_id]])
    mask = torch.ones_like(ids)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), loaded(ids, mask), atol=1e-5)
