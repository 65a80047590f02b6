"""`python -m nli_tune.predict` on the model `train` saved (tiny-random): it reproduces
train's own test scores, batch by batch, writes no text, and rejects bad input cleanly."""

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest

from nli_tune import SAMPLE_DIR
from nli_tune.predict import OUTPUT_COLUMNS
from nli_tune.redsm5.load import load_redsm5
from tests.test_train import assert_no_post_text


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nli_tune.predict", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _predict_posts(out, tmp_path, *flags, post_ids=None, source=SAMPLE_DIR):
    """Write the posts to tmp/in/posts.csv and predict them into tmp/out/scores.csv."""
    (tmp_path / "in").mkdir()
    posts = _posts_csv(tmp_path / "in" / "posts.csv", post_ids, source)
    r = run_predict(
        "--model",
        str(out / "model"),
        "--input",
        str(tmp_path / "in" / "posts.csv"),
        "--output",
        str(tmp_path / "out" / "scores.csv"),
        *flags,
    )
    return posts, r


def _posts_csv(path, post_ids=None, source=SAMPLE_DIR):
    posts = load_redsm5(source).posts
    if post_ids is not None:
        posts = posts[posts["post_id"].isin(set(post_ids))]
    posts.to_csv(path, index=False)
    return posts


def test_predict_reproduces_train_test_scores_in_batches(trained, tmp_path):
    out, *_ = trained
    preds = pd.read_csv(out / "predictions.csv")
    _, r = _predict_posts(out, tmp_path, "--batch-posts", "5", post_ids=preds["post_id"])
    assert r.returncode == 0, r.stderr[-2000:]
    n = preds["post_id"].nunique()
    progress = [line for line in r.stdout.splitlines() if "posts/s" in line]
    assert len(progress) == -(-n // 5) and f"scored {n}/{n} posts" in progress[-1]
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(scores.columns) == OUTPUT_COLUMNS
    assert len(scores) == 9 * n
    both = preds.merge(scores, on=["post_id", "criterion"], suffixes=("_train", "_predict"))
    assert len(both) == len(scores)
    # Batches of 5 posts pad differently from train's one pass: equal up to float noise.
    assert (both["score_train"] - both["score_predict"]).abs().max() < 1e-4
    for col in ("evidence_unit", "evidence_start", "evidence_end"):
        assert (both[f"{col}_train"] == both[f"{col}_predict"]).all(), col
    threshold = json.loads((out / "metrics.json").read_text())["calibration"]["threshold"]
    clear = (both["score_train"] - threshold).abs() > 1e-4  # no flips on float noise
    assert (both["decision_train"] == both["decision_predict"])[clear].all()
    assert_no_post_text(tmp_path / "out", SAMPLE_DIR)
    assert not any(s in r.stdout for s in load_redsm5(SAMPLE_DIR).posts["text"])


def test_predict_scores_the_public_sample(trained, real_sample, tmp_path):
    out, *_ = trained
    posts, r = _predict_posts(out, tmp_path, "--quiet", source=real_sample)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == ""
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(posts) == 17 and len(scores) == 153
    assert set(scores["post_id"].astype(str)) == set(posts["post_id"])
    assert scores["score"].between(0, 1).all()
    texts = dict(zip(posts["post_id"], posts["text"], strict=True))
    for row in scores.itertuples():
        assert 0 <= row.evidence_start < row.evidence_end <= len(texts[str(row.post_id)])
    assert_no_post_text(tmp_path / "out", real_sample)


@pytest.mark.parametrize(
    "content, message",
    [
        ("post_id,body\np1,hello\n", "missing column 'text'"),
        ("post_id,text\np1,hello\np1,again\n", "duplicate post_id 'p1'"),
        ("post_id,text\np1,   \n", "empty text for post_id 'p1'"),
        ("", "file is empty"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(trained, tmp_path, content, message):
    out, *_ = trained
    (tmp_path / "posts.csv").write_text(content)
    r = run_predict(
        "--model",
        str(out / "model"),
        "--input",
        str(tmp_path / "posts.csv"),
        "--output",
        str(tmp_path / "res" / "scores.csv"),
    )
    assert r.returncode == 2
    assert message in r.stderr and "posts.csv" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "res").exists()


def test_not_a_model_folder_is_one_line(tmp_path):
    (tmp_path / "posts.csv").write_text("post_id,text\np1,I cannot sleep.\n")
    r = run_predict("--model", str(tmp_path), "--input", str(tmp_path / "posts.csv"))
    assert r.returncode == 2
    assert "not a trained model folder (no config.yaml)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.csv"]


def test_killed_predict_leaves_no_file_behind(trained, tmp_path):
    out, *_ = trained
    # The bundled posts 4 times over (600, one per batch: ~40 s of work), so the kill at
    # the first batch always lands while it scores.
    posts = load_redsm5(SAMPLE_DIR).posts
    many = pd.concat([posts.assign(post_id=posts["post_id"] + f"_{i}") for i in range(4)])
    many.to_csv(tmp_path / "posts.csv", index=False)
    cmd = [sys.executable, "-m", "nli_tune.predict", "--model", str(out / "model")]
    cmd += ["--input", str(tmp_path / "posts.csv"), "--output", str(tmp_path / "s.csv")]
    proc = subprocess.Popen(
        [*cmd, "--batch-posts", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "scored 1/600 posts" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    said = "".join(seen) + rest
    assert proc.returncode == 128 + signal.SIGTERM, (said[-1500:], err[-1500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.csv"]


def test_a_fold_ensemble_folder_predicts_the_mean_of_its_members(trained, tmp_path):
    """A folder of two members (train's model and a perturbed copy): predict gives the
    mean of what each member's own folder predicts, decided at their mean threshold, with
    the evidence span of a unit of the post; no text."""
    import dataclasses

    import torch

    from nli_tune.model.calibration import Calibration
    from nli_tune.model.classifier import load_model, load_trainable, save_model, trainable_state
    from nli_tune.model.ensemble import save_ensemble

    out, *_ = trained
    model, _, cfg = load_model(out / "model")
    cal0 = Calibration(**json.loads((out / "model" / "calibration.json").read_text()))
    state0 = trainable_state(model)
    gen = torch.Generator().manual_seed(0)
    state1 = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state0.items()}
    cal1 = dataclasses.replace(cal0, a=cal0.a * 0.8, threshold=cal0.threshold + 0.05)
    load_trainable(model, state1)
    save_model(model, cfg, tmp_path / "member1", cal1)
    save_ensemble(model, cfg, tmp_path / "ens", [(state0, cal0), (state1, cal1)], {"trial_id": "t"})
    (tmp_path / "in").mkdir()  # the input holds text; nothing else under tmp_path may
    posts = _posts_csv(tmp_path / "in" / "posts.csv", load_redsm5(SAMPLE_DIR).posts["post_id"][:12])
    scores = {}
    for name, folder in (
        ("m0", out / "model"),
        ("m1", tmp_path / "member1"),
        ("ens", tmp_path / "ens"),
    ):
        r = run_predict("--model", str(folder), "--input", str(tmp_path / "in" / "posts.csv"),
                        "--output", str(tmp_path / f"{name}.csv"))  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        scores[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert "a fold ensemble of 2 models" in r.stdout
    ens, m0, m1 = scores["ens"], scores["m0"], scores["m1"]
    assert len(ens) == 9 * len(posts) and list(ens.columns) == OUTPUT_COLUMNS
    assert (m0["score"] - m1["score"]).abs().max() > 1e-3  # the members differ
    assert ens["score"].to_numpy() == pytest.approx((m0["score"] + m1["score"]) / 2, abs=2e-6)
    threshold = (cal0.threshold + cal1.threshold) / 2
    assert (ens["decision"] == (ens["score"] >= threshold)).all()
    same = m0["evidence_unit"] == m1["evidence_unit"]  # where the members agree, so does it
    assert same.sum() > 0 and (ens["evidence_unit"][same] == m0["evidence_unit"][same]).all()
    texts = load_redsm5(SAMPLE_DIR).texts()
    for row in ens.itertuples():
        assert 0 <= row.evidence_start < row.evidence_end <= len(texts[row.post_id])
    (tmp_path / "in" / "posts.csv").unlink()
    assert_no_post_text(tmp_path, SAMPLE_DIR)
