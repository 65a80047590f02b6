"""Encoding, poolers, DoRA wiring and save/load on the tiny-random preset (mechanics only)."""

import numpy as np
import pytest
import torch

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError
from nli_tune.model.classifier import (
    Pooler,
    bidirectional_masks,
    build_model,
    load_model,
    parameter_counts,
    save_model,
)
from nli_tune.pairs.encoding import POST_FIRST_SEPARATOR, SEPARATOR, collate
from nli_tune.redsm5.load import criteria
from nli_tune.units.evidence import post_spans
from tests.helpers import redsm5, unit_data

TINY = dict(model="tiny-random", num_layers=None, max_length=96, seed=1, pairing="nli")


@pytest.fixture(scope="module")
def tiny():
    cfg = TrainConfig(**TINY, pooling="attention", rank=4)
    return cfg, *build_model(cfg)


def _pairs(tok, posts, rows=(), **cfg):
    """(UnitData, its pairs as token lists) for every unit x the criteria in `rows`."""
    c = TrainConfig(**(TINY | cfg))
    data = unit_data(tok, redsm5(posts, list(rows)), c)
    return data, c


def _seq(data, u, c):
    batch = collate(data, np.array([u]), np.array([c]))
    return batch["input_ids"][0].tolist()


def _criterion(tok, key):
    desc = next(c.description for c in criteria() if c.key == key)
    return tok.encode(desc, add_special_tokens=False)


FATIGUE = [c.key for c in criteria()].index("FATIGUE")


def test_whole_post_unit_truncates_only_the_post(tiny):
    _, _, tok = tiny
    long_post = "I walked the dog and then I went to work again. " * 40
    data, _ = _pairs(tok, {"a": long_post}, unit="post")
    assert len(data) == 1 and (data.starts[0], data.ends[0]) == (0, len(long_post.rstrip()))
    ids = _seq(data, 0, FATIGUE)
    head = [tok.bos_token_id] + _criterion(tok, "FATIGUE")
    head += tok.encode(SEPARATOR, add_special_tokens=False)
    assert list(ids[: len(head)]) == head  # the whole criterion survives
    assert ids[-1] == tok.eos_token_id
    post = tok.encode(long_post.rstrip(), add_special_tokens=False)
    budget = 96 - int(data.fmt.overhead("criterion_first").max())
    assert ids[len(head) : -1] == post[:budget]  # the post's start, cut to the budget
    with pytest.raises(UserError, match="max_length 20: too short"):
        _pairs(tok, {"a": long_post}, unit="post", max_length=20)


def test_long_sentence_is_split_into_token_windows_and_loses_nothing(tiny):
    _, _, tok = tiny
    text = "Short one. " + " ".join(f"word{i}" for i in range(300)) + " end. Bye now."
    data, _ = _pairs(tok, {"a": text}, unit="sentence")
    budget = 96 - int(data.fmt.overhead("criterion_first").max())
    assert all(len(ids) <= budget for ids in data.ids)
    assert len(data) > 4  # the 300-word sentence became several windows
    # The spans are in order, do not overlap and leave out only whitespace.
    spans = list(zip(data.starts.tolist(), data.ends.tolist(), strict=True))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(
        e <= s2 and not text[e:s2].strip()
        for (_, e), (s2, _) in zip(spans, spans[1:], strict=False)
    )
    hits = np.zeros(len(text), int)
    for s, e in spans:
        hits[s:e] += 1
    assert all(hits[i] == 1 for i, ch in enumerate(text) if not ch.isspace())
    # Every token of every sentence is in exactly one window, in order.
    whole = [t for ids in data.ids for t in ids.tolist()]
    expected = []
    for s, e in post_spans(text, "sentence"):
        expected += tok.encode(text[s:e], add_special_tokens=False)
    assert whole == expected


def test_post_first_keeps_the_whole_criterion_at_the_end(tiny):
    _, _, tok = tiny
    long_post = "I walked the dog and then I went to work again. " * 40
    data, _ = _pairs(tok, {"a": long_post}, unit="post", pair_order="post_first")
    ids = _seq(data, 0, FATIGUE)
    tail = tok.encode(POST_FIRST_SEPARATOR, add_special_tokens=False)
    tail += _criterion(tok, "FATIGUE") + [tok.eos_token_id]
    assert len(ids) <= 96 and ids[0] == tok.bos_token_id
    assert list(ids[-len(tail) :]) == tail  # the whole criterion survives, last
    # Same pair, other order: same tokens but for the separator, rearranged.
    short = {"a": "I am tired."}
    other = _seq(_pairs(tok, short)[0], 0, FATIGUE)
    first = _seq(_pairs(tok, short, pair_order="post_first")[0], 0, FATIGUE)
    sep_a = len(tok.encode(SEPARATOR, add_special_tokens=False))
    sep_b = len(tok.encode(POST_FIRST_SEPARATOR, add_special_tokens=False))
    assert len(first) - len(other) == sep_b - sep_a
    assert sorted(first) != sorted(other) or sep_a == sep_b


def test_collate_pads_on_the_right(tiny):
    _, _, tok = tiny
    data, _ = _pairs(tok, {"a": "tired", "b": "so very tired all day every day"})
    batch = collate(data, np.array([0, 1]), np.array([FATIGUE, FATIGUE]))
    mask = batch["attention_mask"]
    n0 = len(_seq(data, 0, FATIGUE))
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
    heads = ("head.", "pooler.", "norm.", "attend.")
    assert all("lora_" in n or n.startswith(heads) for n in trainable)
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


def test_dora_targets_attention_mlp_adds_the_mlp_projections():
    cfg = TrainConfig(**TINY, rank=4, dora_targets="attention_mlp")
    model, _ = build_model(cfg, tokenizer=False)
    mags = [n for n, _ in model.named_parameters() if "lora_magnitude_vector" in n]
    for proj in ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(proj in n for n in mags), proj


def test_ready_masks_give_the_states_transformers_own_masks_give(tiny):
    """Padding in the batch and sequences longer than tiny-random's sliding window (5): the
    broadcast masks must reproduce the model's vmap-built ones exactly, band and all."""
    cfg, model, tok = tiny
    backbone, config = model.backbone, model.backbone.config
    assert config.sliding_window < 30 and "sliding_attention" in config.layer_types
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, config.vocab_size, (4, 30), generator=g)
    mask = (torch.arange(30)[None] < torch.tensor([30, 21, 9, 2])[:, None]).long()
    ready = bidirectional_masks(config, mask)
    assert set(ready) == {"full_attention", "sliding_attention"}
    model.eval()
    with torch.no_grad():
        own = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        same = backbone(input_ids=ids, attention_mask=ready).last_hidden_state
        no_band = {"full_attention": ready["full_attention"]} | {
            "sliding_attention": ready["full_attention"]
        }
        wider = backbone(input_ids=ids, attention_mask=no_band).last_hidden_state
    real = mask.bool()
    assert torch.equal(own[real], same[real])
    assert not torch.allclose(own[real], wider[real])  # the band is there and it matters
    causal = TrainConfig(**TINY, attention="causal")
    causal_config = build_model(causal, tokenizer=False)[0].backbone.config
    assert bidirectional_masks(causal_config, mask) is mask  # the model builds its own


def test_merged_scoring_matches_the_adapters_and_restores_the_base_bit_for_bit():
    cfg = TrainConfig(**TINY, rank=4, dora_targets="attention_mlp")
    model, tok = build_model(cfg)
    model.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # adapters far from identity: merging changes the weights
    base = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    ids = torch.tensor([[tok.bos_token_id, 5, 6, 7, 8, tok.eos_token_id]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        plain = model(ids, mask)
        with model.merged():
            merged = model(ids, mask)
            changed = [n for n, p in model.named_parameters() if n in base and "weight" in n]
            assert any(not torch.equal(dict(model.named_parameters())[n], base[n]) for n in changed)
        after = model(ids, mask)
    assert torch.allclose(merged, plain, atol=1e-4)
    assert torch.equal(after, plain)
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n


def test_building_a_model_warns_of_nothing_the_user_cannot_fix(tmp_path):
    """peft reads transformers' deprecated `is_gradient_checkpointing` on every build (new
    adapters and saved ones): that one FutureWarning is silenced, and only that one.
    Checkpointing is switched on by its current name, so it warns of nothing either."""
    import warnings

    cfg = TrainConfig(model="tiny-random", num_layers=None, grad_checkpointing=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model, _ = build_model(cfg, tokenizer=False)
        save_model(model, cfg, tmp_path / "m")
        load_model(tmp_path / "m")
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [
        str(w.message) for w in seen
    ]
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        assert model.backbone.get_base_model().is_gradient_checkpointing  # not silenced here
