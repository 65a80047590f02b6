"""adapt_layers: DoRA on the top layers only, the frozen bottom run once per unit (tiny-random,
2 layers: the bottom is layer 0, the adapted top layer 1)."""

import numpy as np
import pytest
import torch

from nli_tune import SAMPLE_DIR
from nli_tune.core.config import TrainConfig
from nli_tune.model.classifier import build_model
from nli_tune.model.prefix import cache_prefix, layer_span
from nli_tune.pairs.encoding import collate, encode_units
from nli_tune.redsm5.load import load_redsm5
from nli_tune.training.fold_trainer import FoldTrainer

TINY = dict(model="tiny-random", num_layers=None, max_length=96, seed=1, pairing="multilabel")


def _model(**overrides):
    cfg = TrainConfig(**(TINY | overrides))
    model, tok = build_model(cfg)
    with torch.no_grad():  # non-zero adapters and head, so that equal outputs mean something
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return cfg, model.eval(), tok


def test_only_the_top_layers_carry_adapters():
    _, model, _ = _model(adapt_layers=1)
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters()
               if p.requires_grad and ".layers." in n}  # fmt: skip
    assert adapted == {"1"}
    _, every, _ = _model()
    assert {n.split(".layers.")[1].split(".")[0] for n, p in every.named_parameters()
            if p.requires_grad and ".layers." in n} == {"0", "1"}  # fmt: skip


def test_bottom_then_top_equals_the_whole_model_with_padding():
    _, model, _ = _model(adapt_layers=1)
    ids = torch.randint(5, 200, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        whole, att = model.score(ids, mask)
        states = model.prefix_states(ids, mask)
        part, att_part = model.score(ids, mask, None, states)
    assert torch.allclose(whole, part, atol=1e-6) and torch.allclose(att, att_part, atol=1e-6)
    assert whole.abs().max() > 1e-2  # a head that is not zero
    # The top must start from the bottom's states: the embeddings alone give other scores.
    text = next(m for m in model.modules() if type(m).__name__ == "Gemma3TextModel")
    with torch.no_grad():
        skipped = model.score(ids, mask, None, text.embed_tokens(ids))[0]
    assert not torch.allclose(whole, skipped, atol=1e-3)


def test_a_span_outside_the_model_is_refused():
    _, model, _ = _model(adapt_layers=1)
    text = next(m for m in model.modules() if type(m).__name__ == "Gemma3TextModel")
    with pytest.raises(ValueError, match=r"\[1, 3\) outside the model's 2 layers"):
        layer_span(text, 1, 3)


def test_cached_units_score_and_train_as_the_whole_model_does():
    cfg, model, tok = _model(adapt_layers=1)
    data = encode_units(tok, load_redsm5(SAMPLE_DIR), cfg)
    cached = cache_prefix(model, data, 16, "cpu", None)
    assert data.prefix is None and len(cached.prefix) == len(data)
    lengths = collate(data, np.arange(len(data)), np.zeros(len(data), int))["attention_mask"]
    assert [len(s) for s in cached.prefix] == lengths.sum(1).tolist()
    units = np.arange(0, len(data), 7)
    crits = np.zeros(len(units), int)
    with torch.no_grad():
        plain = model.score(**_ids(collate(data, units, crits)))[0]
        fast = model.score(**_ids(collate(cached, units, crits)), states=collate(
            cached, units, crits)["states"])[0]  # fmt: skip
    assert torch.allclose(plain, fast, atol=1e-5)
    # Training steps through the cache move the adapters exactly as the whole model does.
    losses = []
    for units_data in (data, cached):
        cfg2, model2, _ = _model(adapt_layers=1, epochs=1, calibration="none", precision="fp32")
        if units_data is cached:
            units_data = cache_prefix(model2, data, 16, "cpu", None)
        trainer = FoldTrainer(cfg2, model2, units_data, None)
        trainer.fit()
        losses.append(trainer.state.history[0]["train_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_nli_pairs_and_fully_adapted_models_are_not_cached():
    cfg, model, tok = _model()  # every layer adapted
    data = encode_units(tok, load_redsm5(SAMPLE_DIR), cfg)
    assert cache_prefix(model, data, 16, "cpu", None).prefix is None
    cfg, model, tok = _model(adapt_layers=1, pairing="nli")
    data = encode_units(tok, load_redsm5(SAMPLE_DIR), cfg)
    assert cache_prefix(model, data, 16, "cpu", None).prefix is None


def _ids(batch):
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "pool_mask": batch["unit_mask"]}  # fmt: skip
