"""`python -m nli_tune.bench quality` on tiny-random: the side-by-side table's mechanics."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from nli_tune import SAMPLE_DIR
from nli_tune.redsm5.folds import make_folds
from nli_tune.redsm5.load import load_redsm5


def _quality(tmp, *only: str):
    """(JSON, Markdown table, stdout) of a tiny-random quality run of the rows `only`."""
    cfg = {"model": "tiny-random", "num_layers": None, "max_length": 96, "epochs": 1}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [
            sys.executable, "-m", "nli_tune.bench", "quality", "--folds", "2",
            "--heldout-posts", "30", "--config", str(tmp / "cfg.yaml"),
            "--output", str(tmp / "q.json"), *(a for row in only for a in ("--only", row)),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((tmp / "q.json").read_text()), (tmp / "q.md").read_text(), r.stdout


@pytest.fixture(scope="module")
def quality(tmp_path_factory):
    return _quality(tmp_path_factory.mktemp("quality"), "baselines", "post", "evidence")


def test_cheaper_unit_rows_have_scores_and_wall_time(tmp_path):
    """The two cheaper units run as their own rows (a separate run: each row trains and
    scores every fold, too long for one subprocess on 2 shared cores)."""
    result, table, stdout = _quality(tmp_path, "name", "multilabel")
    names = ["evidence level, hypothesis name", "evidence level, multilabel"]
    assert list(result["rows"]) == names
    for name in names:
        row = result["rows"][name]
        assert len(row["cv_fold_macro_f1"]) == 2 and row["heldout_macro_f1"][0] is not None
        assert 0 <= row["cv_evidence_hit_at_1"][0] <= 1
        assert row["seconds"] > 0 and f"| {row['seconds']:.0f} s |" in table
        assert f"| {name} |" in table
    _assert_no_post_text(json.dumps(result) + table + stdout)


def test_every_design_and_baseline_is_scored_on_the_same_folds(quality):
    result, table, _ = quality
    names = ["majority class", "TF-IDF + logistic regression"]
    names += ["whole post (seed format)", "evidence level (default)"]
    assert list(result["rows"]) == names
    for name in names:
        row = result["rows"][name]
        assert len(row["cv_fold_macro_f1"]) == 2
        assert row["cv_macro_f1"][0] == pytest.approx(np.mean(row["cv_fold_macro_f1"]))
        assert row["heldout_macro_f1"][0] is not None
        assert f"| {name} |" in table
    # The majority class says "unmatched" to every pair: its macro-F1 is half the F1 of the
    # unmatched class on each fold's validation posts, computed here by hand.
    data = load_redsm5(SAMPLE_DIR)
    pairs = data.pairs()
    plan = make_folds(pairs, 2, 0.15, 13)
    for k, got in enumerate(result["rows"]["majority class"]["cv_fold_macro_f1"]):
        val = pairs[pairs.post_id.isin(set(plan.fold(k)[1]))]
        neg = (val.label == 0).sum()
        assert got == pytest.approx((2 * neg / (2 * neg + (val.label == 1).sum())) / 2)
    # Only the evidence-level design locates evidence: hit@1 is a share there, absent else.
    assert 0 <= result["rows"]["evidence level (default)"]["cv_evidence_hit_at_1"][0] <= 1
    assert result["rows"]["whole post (seed format)"]["cv_evidence_hit_at_1"][0] is None
    assert result["rows"]["TF-IDF + logistic regression"]["cv_roc_auc_within"][0] > 0.5


def test_tfidf_is_calibrated_on_the_designs_calibration_posts(quality):
    """Fold by fold, TF-IDF's Platt + threshold posts are the ones each design's trainer
    held out, and every row reports the ranking metrics beside macro-F1."""
    result, table, _ = quality
    rows = result["rows"]
    tfidf = rows["TF-IDF + logistic regression"]["fold_calib_posts"]
    assert len(tfidf) == 2 and all(tfidf)
    for name in ("whole post (seed format)", "evidence level (default)"):
        assert [sorted(c) for c in rows[name]["fold_calib_posts"]] == [sorted(c) for c in tfidf]
    plan = make_folds(load_redsm5(SAMPLE_DIR).pairs(), 2, 0.15, 13)
    for k, posts in enumerate(tfidf):
        train, val = plan.fold(k)
        assert set(posts) < set(train) and not set(posts) & set(val)
    for name, row in rows.items():
        for key in ("cv_roc_auc", "cv_roc_auc_within", "cv_pr_auc"):
            assert 0 <= row[key][0] <= 1, (name, key)
    assert "CV PR-AUC" in table and "same held-out calibration posts" in table


def test_no_post_text_in_the_quality_outputs(quality):
    result, table, stdout = quality
    _assert_no_post_text(json.dumps(result) + table + stdout)


def _assert_no_post_text(blob: str) -> None:
    for text in load_redsm5(SAMPLE_DIR).posts["text"]:
        for sentence in text.split(". "):
            if len(sentence) >= 25:
                assert sentence not in blob
