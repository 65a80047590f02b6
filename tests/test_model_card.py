"""What the trained model publishes about its backbone: a hub id or nothing, never a path."""

import json
import os

from nli_tune.backbones import public_id


def test_public_id_names_hub_ids_never_paths(tmp_path):
    assert public_id("gemma-3-270m") == "google/gemma-3-270m"
    assert public_id("google/gemma-3-1b-it") == "google/gemma-3-1b-it"
    assert public_id("tiny-random") is None
    (tmp_path / "org" / "ckpt").mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # "org/ckpt" looks like a hub id but is a folder here: local
        assert public_id("org/ckpt") is None
    finally:
        os.chdir(cwd)
    for local in (str(tmp_path), "./ckpt", "~/ckpt", "/abs/ckpt", "a/b/c", "ckpt"):
        assert public_id(local) is None, local


def test_saved_adapter_names_no_local_checkpoint_path(tmp_path):
    """peft writes the backbone's folder into adapter_config.json; from a local checkpoint
    (as from the 270M preset's cache) that is a path of this machine: save_model drops it."""
    from transformers import Gemma3ForCausalLM

    from nli_tune.backbones import _tiny_tokenizer, tiny_config
    from nli_tune.config import TrainConfig
    from nli_tune.model import build_model, save_model

    ckpt = tmp_path / "ckpt"
    tok = _tiny_tokenizer()
    Gemma3ForCausalLM(tiny_config(len(tok))).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    cfg = TrainConfig(model=str(ckpt), num_layers=None, precision="fp32")
    model, _ = build_model(cfg)
    save_model(model, cfg, tmp_path / "model")
    config = (tmp_path / "model" / "adapter" / "adapter_config.json").read_text()
    assert json.loads(config)["base_model_name_or_path"] is None
    assert str(ckpt) not in config
