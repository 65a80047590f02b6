"""`python -m nli_tune.train` end to end on tiny-random (mechanics; learning is checked by
the default run in the README and by bench)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nli_tune import SAMPLE_DIR
from nli_tune.redsm5.folds import split_test
from nli_tune.redsm5.load import load_redsm5
from nli_tune.units.evidence import post_spans
from tests.conftest import run_train


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) >= 25]


def assert_no_post_text(root: Path, data_dir: Path) -> None:
    """No sentence (>= 25 chars) of any post appears in any file under root."""
    data = load_redsm5(data_dir)
    blobs = [p.read_bytes().decode("utf-8", "ignore") for p in root.rglob("*") if p.is_file()]
    assert blobs
    for text in data.posts["text"]:
        for sentence in _sentences(text):
            assert not any(sentence in b for b in blobs), f"post text leaked: {sentence[:40]}"


def test_outputs_and_numbers(trained):
    out, stdout, stderr = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["macro_f1"] <= 1.0
    assert {"majority", "tfidf_logreg"} <= set(metrics["baselines"])
    assert "majority-class macro-F1" in stdout and "TF-IDF + logistic regression" in stdout
    assert re.search(r"epoch 1/1  loss \d\.\d{4}", stdout)  # the epoch's line
    assert re.search(r"epoch 1/1: +\d+%\|.*\| \d+/\d+ \[", stderr)  # its progress bar
    lo, hi = metrics["test"]["macro_f1_ci95"]
    assert lo <= metrics["test"]["macro_f1"] <= hi and lo < hi
    lo, hi = metrics["baselines"]["tfidf_logreg"]["macro_f1_ci95"]
    assert lo <= metrics["baselines"]["tfidf_logreg"]["macro_f1"] <= hi
    versus = metrics["model_minus_tfidf"]
    gap = metrics["test"]["macro_f1"] - metrics["baselines"]["tfidf_logreg"]["macro_f1"]
    assert abs(versus["macro_f1_difference"] - gap) < 1e-9
    assert versus["ci95"][0] <= versus["ci95"][1]
    data = load_redsm5(SAMPLE_DIR)
    _, test_posts = split_test(data.pairs(), 0.15, 3)
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == [
        "post_id", "criterion", "label", "score", "decision",
        "evidence_unit", "evidence_start", "evidence_end",
    ]  # fmt: skip
    assert len(preds) == 9 * len(test_posts) == metrics["data"]["test_pairs"]
    assert set(preds["post_id"]) == set(test_posts)
    assert preds["label"].sum() == metrics["data"]["test_matched"]
    assert preds["score"].between(0, 1).all()
    threshold = metrics["calibration"]["threshold"]
    assert (preds["decision"] == (preds["score"] >= threshold)).all()
    assert metrics["calibration"]["method"] == "platt" and metrics["calibration"]["posts"] > 0
    # The evidence shown is a sentence of the post (or, past max_length, a token window of
    # one): its span points into the text, inside one sentence, starting one at its start.
    texts = data.texts()
    for row in preds.itertuples():
        text = texts[row.post_id]
        assert 0 <= row.evidence_start < row.evidence_end <= len(text)
        spans = post_spans(text, "sentence")
        assert any(s <= row.evidence_start < row.evidence_end <= e for s, e in spans)
        assert row.evidence_unit >= sum(e <= row.evidence_start for _, e in spans)
    # Every test post's 9 rows share its units; hit@1 is a share.
    assert 0 <= metrics["test"]["evidence_hit_at_1"] <= 1
    # the majority class is "unmatched": its macro-F1 is half the unmatched-class F1 (< 0.5)
    assert metrics["baselines"]["majority"]["macro_f1"] < 0.5
    model_files = {p.name for p in (out / "model").rglob("*") if p.is_file()}
    assert {"head.safetensors", "config.yaml", "adapter_model.safetensors"} <= model_files
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pth")]


def test_no_post_text_written(trained):
    out, stdout, stderr = trained
    assert_no_post_text(out, SAMPLE_DIR)
    for text in load_redsm5(SAMPLE_DIR).posts["text"]:
        assert not any(s in stdout for s in _sentences(text))


def test_bad_config_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "cfg.yaml").write_text("pooling: gem\n")
    r = run_train(
        "--config", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "out"), timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'cfg.yaml'}: config key 'pooling' = 'gem': must be one of "
        "mean, cls, max, attention"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]
    (tmp_path / "cfg.yaml").write_text("learning_rate: 0.1\n")
    r = run_train("--config", str(tmp_path / "cfg.yaml"), timeout=120)
    assert r.returncode == 2 and "unknown config key 'learning_rate'" in r.stderr
    # A model that cannot be found is the user's to fix too: one line, not a traceback.
    (tmp_path / "cfg.yaml").write_text("model: ./no-such-checkpoint\n")
    r = run_train(
        "--config", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "out"), timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cannot load backbone './no-such-checkpoint'")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_fingerprint_warning_names_both_fingerprints(capsys):
    from nli_tune.train import _warn_fingerprint

    _warn_fingerprint({"data_fingerprint": "abcd1234abcd1234"}, "abcd1234abcd1234ffff")
    _warn_fingerprint(None, "abcd1234abcd1234ffff")  # a hand-written config: no search block
    assert capsys.readouterr().err == ""
    _warn_fingerprint({"data_fingerprint": "abcd1234abcd1234"}, "0123456789abcdef0000")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0123456789abcdef" in err[0] and "abcd1234abcd1234" in err[0]


BAD_EVIDENCE_KEYS = [
    ("unit: paragraph", "config key 'unit' = 'paragraph': must be one of post, sentence, window"),
    (
        "aggregate: mean",
        "config key 'aggregate' = 'mean': must be one of max, lse, topk, attention",
    ),
    ("evidence_weight: 1.5", "config key 'evidence_weight' = 1.5: must be in [0, 1]"),
    (
        "dora_targets: mlp",
        "config key 'dora_targets' = 'mlp': must be one of attention, attention_mlp",
    ),
    (
        "calibration: test",
        "config key 'calibration' = 'test': must be one of holdout, per_criterion, none",
    ),
    ("calibration_fraction: 0.6", "config key 'calibration_fraction' = 0.6: must be in (0, 0.5)"),
    ("topk: 0", "config key 'topk' = 0: must be a positive integer"),
    (
        "window_sentences: 2\nwindow_stride: 3",
        "config key 'window_stride' = 3: must be <= window_sentences (2) to cover every sentence",
    ),
]


@pytest.mark.parametrize(("yaml_text", "message"), BAD_EVIDENCE_KEYS)
def test_bad_evidence_keys_are_one_line_errors(tmp_path, yaml_text, message):
    from nli_tune.core.config import TrainConfig
    from nli_tune.core.errors import UserError

    (tmp_path / "cfg.yaml").write_text(yaml_text.replace("\\n", "\n") + "\n")
    with pytest.raises(UserError) as err:
        TrainConfig.from_file(tmp_path / "cfg.yaml")
    assert str(err.value) == f"{tmp_path / 'cfg.yaml'}: {message}"


def _pairs_of(pairs: pd.DataFrame, ids) -> pd.DataFrame:
    return pairs[pairs["post_id"].isin(set(ids))].reset_index(drop=True)


def test_tfidf_is_calibrated_on_the_models_calibration_posts(trained):
    """The TF-IDF row is decided by the model's rule on the model's posts: the same held-out
    calibration post ids, the same fitting posts, and its recorded macro-F1 is what
    `fit_calibration` on those posts gives (not a fixed 0.5)."""
    import numpy as np

    from nli_tune.evaluation.baselines import logit, tfidf_scores
    from nli_tune.evaluation.metrics import classification_metrics
    from nli_tune.model.calibration import fit_calibration

    out, _, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    calib, fit = metrics["calibration_posts"], metrics["fitting_posts"]
    assert calib["model"] and calib["model"] == calib["tfidf_logreg"]
    assert fit["model"] == fit["tfidf_logreg"]
    assert len(calib["model"]) == metrics["calibration"]["posts"]
    assert not set(calib["model"]) & set(fit["model"])
    assert set(calib["model"]) | set(fit["model"]) == set(map(str, splits["train"]))
    tf = metrics["baselines"]["tfidf_logreg"]
    assert tf["calibration"]["method"] == "platt"
    assert tf["calibration"]["posts"] == len(calib["model"])
    # Recompute the row from the recorded ids alone.
    data = load_redsm5(SAMPLE_DIR)
    pairs, texts = data.pairs(), data.texts()
    fit_pairs, calib_pairs = _pairs_of(pairs, fit["model"]), _pairs_of(pairs, calib["model"])
    test_pairs = _pairs_of(pairs, splits["test"])
    cal = fit_calibration(
        logit(tfidf_scores(texts, fit_pairs, calib_pairs, 3)), calib_pairs["label"].to_numpy()
    )
    assert cal.threshold == pytest.approx(tf["threshold"])
    probs = cal.prob(logit(tfidf_scores(texts, fit_pairs, test_pairs, 3)))
    expected = classification_metrics(test_pairs["label"].to_numpy(), probs, None, cal.threshold)
    for key in ("macro_f1", "roc_auc", "pr_auc"):
        assert tf[key] == pytest.approx(expected[key]), key
    assert 0 <= tf["roc_auc_within"] <= 1 and 0 <= metrics["test"]["pr_auc"] <= 1
    # Every row has its paired bootstrap against the model.
    for name in ("tfidf_logreg", "majority"):
        lo, hi = metrics["baselines"][name]["macro_f1_ci95"]
        assert lo <= metrics["baselines"][name]["macro_f1"] <= hi
    versus = metrics["model_minus_majority"]
    gap = metrics["test"]["macro_f1"] - metrics["baselines"]["majority"]["macro_f1"]
    assert versus["macro_f1_difference"] == pytest.approx(gap)
    assert np.isfinite(versus["ci95"]).all()


def test_calibrated_tfidf_without_holdout_is_the_raw_tfidf_at_one_half():
    """`calibration: none` holds nothing out: TF-IDF is fitted on every training post and
    decided at 0.5 on its own probability, as the model would be."""
    import numpy as np

    from nli_tune.core.config import TrainConfig
    from nli_tune.evaluation.baselines import calibrated_tfidf, tfidf_scores

    data = load_redsm5(SAMPLE_DIR)
    pairs = data.pairs()
    train_posts, test_posts = split_test(pairs, 0.15, 3)
    train = pairs[pairs["post_id"].isin(set(train_posts))].reset_index(drop=True)
    test = pairs[pairs["post_id"].isin(set(test_posts))].reset_index(drop=True)
    cfg = TrainConfig.from_dict({"calibration": "none", "seed": 3})
    got = calibrated_tfidf(data.texts(), train, test, cfg)
    assert got.calib_posts == [] and got.calibration.threshold == 0.5
    assert list(got.fit_posts) == list(train_posts)
    np.testing.assert_allclose(got.probs, tfidf_scores(data.texts(), train, test, 3), atol=1e-9)
    held = calibrated_tfidf(data.texts(), train, test, TrainConfig.from_dict({"seed": 3}))
    assert held.calibration.method == "platt" and len(held.calib_posts) > 0
    assert not set(held.calib_posts) & set(held.fit_posts)


def test_a_fit_that_did_not_learn_is_retried_with_the_next_seed(tmp_path):
    """Random weights never learn: each fit is judged, said so in a line, fitted again with
    the next seed; the fit kept is the one that ranks its calibration posts best."""
    cfg = {"model": "tiny-random", "num_layers": None, "max_length": 96, "epochs": 2}
    cfg |= {"batch_size": 32, "seed": 3, "split_seed": 3}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    r = run_train("--config", str(tmp_path / "cfg.yaml"), "--output", str(out), "--retries", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    verdicts = re.findall(r"^fit (\d) \(seed (\d+)\): did not learn \(train loss last/first "
                          r"(\d\.\d\d), at most 0\.5;", r.stdout, re.M)  # fmt: skip
    assert [(n, s) for n, s, _ in verdicts] == [("1", "3"), ("2", "4")]
    assert "retrying with seed 4 (1 retries left)" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    attempts = metrics["attempts"]
    assert [a["seed"] for a in attempts] == [3, 4] and not any(a["learned"] for a in attempts)
    best = max(range(2), key=lambda i: attempts[i]["calib_roc_auc_within"])
    assert metrics["kept_attempt"] == best and [a["kept"] for a in attempts].count(True) == 1
    assert f"keeping fit {best + 1}, the best on the calibration posts" in r.stdout
    # The model and its config are the kept fit's.
    assert metrics["config"]["seed"] == 3 + best
    saved = yaml.safe_load((out / "model" / "config.yaml").read_text())
    assert saved["seed"] == 3 + best and saved["split_seed"] == 3
    assert float(verdicts[best][2]) == pytest.approx(attempts[best]["loss_ratio"], abs=0.005)


def test_train_tests_on_the_searchs_held_out_posts_and_refuses_a_mixed_split(tmp_path):
    from nli_tune.train import _check_held_out

    data = load_redsm5(SAMPLE_DIR)
    _, test = split_test(data.pairs(), 0.15, 0)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"seed": 0, "test": list(test), "folds": []}))
    search = {"folds_file": str(folds)}
    from nli_tune.core.config import TrainConfig

    _check_held_out(search, data, TrainConfig(split_seed=0), "cfg.yaml")  # the search's split
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"split_seed": 5, "search": search}))
    r = run_train(
        "--config", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "out"), timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'cfg.yaml'}: split_seed 5 and test_fraction 0.15")
    assert f"hold out other posts than the search did ({folds})" in line
    assert not (tmp_path / "out").exists()
    folds.unlink()  # the search's folds.json gone: refused too, not split afresh silently
    r = run_train("--config", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "out"))
    assert r.returncode == 2 and f"the search's {folds} is gone" in r.stderr


def test_key_value_overrides_change_the_config_and_a_bad_key_exits_2(tmp_path):
    """`train lr=... pooling=...` (and the earlier project's names) over the config file;
    unknown keys and bad values fail before anything runs."""
    from nli_tune.core.config import TrainConfig
    from nli_tune.core.overrides import parse_overrides, training_overrides

    over = parse_overrides(["training.learning_rate=1e-3", "model.pooling_strategy=cls",
                            "num_layers=null", "rank=8"])  # fmt: skip
    assert over == {"lr": "1e-3", "pooling": "cls", "num_layers": None, "rank": 8}
    cfg = TrainConfig.from_dict({"lr": 5e-3} | training_overrides(over, TrainConfig.keys()))
    assert (cfg.lr, cfg.pooling, cfg.num_layers, cfg.rank) == (1e-3, "cls", None, 8)
    r = run_train("--output", str(tmp_path / "out"), "learning_rate=1e-3", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "override 'learning_rate': not a training-config key (known: model," in line
    assert "training.learning_rate" in line  # the alias a user of the earlier project types
    r = run_train("--output", str(tmp_path / "out"), "rank=eight", timeout=120)
    assert r.returncode == 2 and "command line: config key 'rank' = 'eight'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_second_train_into_the_same_output_is_refused_and_the_first_kept(trained, tmp_path):
    out, *_ = trained
    before = (out / "metrics.json").read_text()
    r = run_train("--output", str(out), "--retries", "0", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: --output {out}: exists (an earlier run?); pass --overwrite to replace it, or "
        "another --output (default: a new folder under outputs/final)"
    ]
    assert (out / "metrics.json").read_text() == before  # the first model is intact


def test_without_output_train_names_its_folder_after_the_model_and_the_time(tmp_path):
    from types import SimpleNamespace

    from nli_tune.core.config import TrainConfig
    from nli_tune.train import _output

    args = SimpleNamespace(output=None, overwrite=False)
    path = _output(args, TrainConfig(model="google/gemma-3-1b-it"))
    assert path.parent == Path("outputs/final")
    assert re.fullmatch(r"gemma-3-1b-it-\d{8}-\d{6}", path.name)
    assert _output(SimpleNamespace(output=str(tmp_path), overwrite=True), TrainConfig()) == tmp_path


def test_layer_count_follows_the_model_and_the_ready_configs_validate():
    """No num_layers means every layer, for the preset and any other model (checked on the
    config and the checkpoint's own layer count; nothing is downloaded)."""
    from nli_tune import REPO_ROOT
    from nli_tune.core.config import TrainConfig
    from nli_tune.model.backbones import checkpoint_layers
    from nli_tune.model.prefix import layer_line

    cfg = TrainConfig.from_dict({"model": "google/gemma-3-1b-it"})
    assert cfg.num_layers is None and cfg.adapt_layers is None
    assert layer_line(cfg, 26) == "26 layers, DoRA r=16 on attention of every layer"
    preset = TrainConfig()
    assert layer_line(preset, checkpoint_layers("gemma-3-270m")).startswith("18 layers,")
    top = TrainConfig(adapt_layers=6)
    assert layer_line(top, 18) == (
        "18 layers, DoRA r=16 on attention of the top 6 (the 12 below run once per unit)"
    )
    for name, layers in (("gemma-3-1b-it", None), ("gemma-3-4b-it", None)):
        ready = TrainConfig.from_file(REPO_ROOT / "configs" / f"{name}.yaml")
        assert ready.model == f"google/{name}" and ready.num_layers == layers
        assert ready.precision == "bf16" and ready.grad_checkpointing
