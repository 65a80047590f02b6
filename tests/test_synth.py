"""Tests for the synthetic ReDSM5 generator."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from nli_tune import SAMPLE_DIR
from nli_tune.redsm5 import synth
from nli_tune.redsm5 import synth_templates as tpl

REAL_SCALE = 1484


@pytest.fixture(scope="module")
def full():
    return synth.generate(REAL_SCALE, seed=0)


@pytest.fixture(scope="module")
def small():
    return synth.generate(300, seed=3, mean_words=60)


@pytest.fixture(scope="module")
def heldout():
    return synth.generate(200, seed=4, mean_words=120, templates="heldout")


def positive_pairs(annotations: pd.DataFrame) -> set[tuple[str, str]]:
    pos = annotations[(annotations.status == 1) & annotations.DSM5_symptom.isin(synth.SYMPTOMS)]
    return set(zip(pos.post_id, pos.DSM5_symptom, strict=True))


def test_the_generator_has_rates_and_templates_for_every_criterion():
    # Its labels come from the criteria file the model is trained on
    # (data/dsm5_criteria.json); its own tables must cover each one, so a criterion added
    # to the file without a prevalence or sentences fails here, not in a generated set.
    from nli_tune.redsm5.load import criterion_keys

    keys = set(criterion_keys())
    assert len(keys) == 9 and "SPECIAL_CASE" not in keys
    assert set(synth.REAL_COUNTS) == keys | {"SPECIAL_CASE"}
    assert keys <= set(tpl.POS) and keys <= set(tpl.NEG)


@pytest.mark.parametrize("data", ["full", "small", "heldout"])
def test_format_matches_redsm5(data, request):
    posts, ann = request.getfixturevalue(data)
    assert list(posts.columns) == ["post_id", "text"]
    assert list(ann.columns) == [
        "post_id", "sentence_id", "sentence_text", "DSM5_symptom", "status", "explanation",
    ]  # fmt: skip
    assert posts.post_id.str.fullmatch(r"s_\d+_\d+").all()
    assert posts.post_id.is_unique
    assert (ann.sentence_id.str.rsplit("_", n=1).str[0] == ann.post_id).all()
    assert ann.sentence_id.str.rsplit("_", n=1).str[1].str.fullmatch(r"\d+").all()
    assert set(ann.post_id) <= set(posts.post_id)
    assert set(ann.status) == {0, 1}
    assert set(ann.DSM5_symptom) == set(synth.LABELS)
    assert not ann.duplicated(["sentence_id", "DSM5_symptom"]).any()
    # A sentence id names one sentence of one post.
    assert (ann.groupby("sentence_id")[["sentence_text", "post_id"]].nunique() == 1).all().all()
    assert ann.explanation.str.len().min() > 20


@pytest.mark.parametrize("data", ["full", "small", "heldout"])
def test_every_annotated_sentence_is_in_its_post(data, request):
    posts, ann = request.getfixturevalue(data)
    text = dict(zip(posts.post_id, posts.text, strict=True))
    assert all(s in text[p] for p, s in zip(ann.post_id, ann.sentence_text, strict=True))


def test_real_format_features_present(full):
    _, ann = full
    assert (ann.DSM5_symptom == "SPECIAL_CASE").any()
    # One sentence carrying two symptoms.
    assert ann.sentence_id.duplicated().any()
    # A post with both a 0 and a 1 row for the same symptom.
    both = ann.groupby(["post_id", "DSM5_symptom"]).status.nunique()
    assert (both == 2).sum() > 20


def test_readme_command_reproduces_the_bundled_sample(tmp_path):
    """The docs' synth command (parsed from docs/data.md, not retyped) writes the bundled
    data/sample byte for byte: the sample is what the generator makes."""
    readme = (SAMPLE_DIR.parent.parent / "docs" / "data.md").read_text()
    cmd = re.search(r"python -m nli_tune.data synth --out data/sample (.*)", readme).group(1)
    args = dict(re.findall(r"--([\w-]+) (\S+)", cmd))
    synth.write(
        tmp_path, int(args["posts"]), int(args["seed"]), int(args["mean-words"]),
        templates=args["templates"],
    )  # fmt: skip
    for name in (synth.POSTS_FILE, synth.ANNOTATIONS_FILE):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


def _label_rates(posts: pd.DataFrame, ann: pd.DataFrame) -> pd.Series:
    """Share of posts with at least one status-1 row, per label, and with none."""
    pos = ann[ann.status == 1]
    rates = pos.groupby("DSM5_symptom").post_id.nunique() / len(posts)
    rates["none"] = 1 - pos.post_id.nunique() / len(posts)
    return rates


def test_prevalence_at_scale_matches_the_bundled_sample(full):
    """A 1,484-post draw (seed 0) has the label prevalence the committed 150-post sample
    (seed 7) shows, within 3 binomial standard errors of the difference: the rates are a
    property of the generator, not of one seed. (ReDSM5's published counts are only quoted
    in synth.py itself, so they are not an independent yardstick.)"""
    sample = (
        pd.read_csv(SAMPLE_DIR / synth.POSTS_FILE),
        pd.read_csv(SAMPLE_DIR / synth.ANNOTATIONS_FILE),
    )
    big, small = _label_rates(*full), _label_rates(*sample)
    assert set(big.index) == set(small.index) == {*synth.LABELS, "none"}
    n_big, n_small = len(full[0]), len(sample[0])
    for label in big.index:
        p = (big[label] * n_big + small[label] * n_small) / (n_big + n_small)
        se = np.sqrt(p * (1 - p) * (1 / n_big + 1 / n_small))
        assert abs(big[label] - small[label]) <= 3 * se, (label, big[label], small[label])
    posts, ann = full
    # Co-occurrence: several symptoms in one post is common.
    per_post = ann[ann.status == 1].groupby("post_id").DSM5_symptom.nunique()
    assert (per_post >= 2).mean() > 0.15


def test_hard_negatives_share_topic_words_and_are_common(full):
    posts, ann = full
    neg = ann[ann.status == 0]
    assert neg.post_id.nunique() > 0.3 * len(posts)
    positive = positive_pairs(ann)
    absent = [(p, s) not in positive for p, s in zip(neg.post_id, neg.DSM5_symptom, strict=True)]
    assert np.mean(absent) > 0.6  # mostly on posts where the symptom is absent
    for symptom in synth.SYMPTOMS:
        assert (neg.DSM5_symptom == symptom).sum() >= 20, symptom
    neg_text = " ".join(neg.sentence_text).lower()
    for word in ("suicidal", "sleep", "appetite", "worthless", "energy", "focus", "restless"):
        assert word in neg_text


def test_wording_is_varied(full):
    _, ann = full
    for symptom in synth.SYMPTOMS:
        assert len(tpl.POS[symptom]) >= 15, symptom
        pos = ann[(ann.DSM5_symptom == symptom) & (ann.status == 1)]
        assert pos.sentence_text.nunique() >= min(60, 0.6 * len(pos)), symptom
    assert ann.explanation.nunique() > 100


def test_length_distribution(full, small):
    words = full[0].text.str.split().str.len()
    assert abs(words.mean() - 295) < 0.08 * 295
    assert words.min() >= 25
    assert words.std() > 0.5 * words.mean()  # wide spread, like real posts
    small_words = small[0].text.str.split().str.len()
    assert abs(small_words.mean() - 60) < 0.12 * 60
    # Short posts still carry every symptom and hard-negative sentence.
    small_rate = len(positive_pairs(small[1])) / (len(small[0]) * len(synth.SYMPTOMS))
    assert 0.07 < small_rate < 0.13
    assert (small[1].status == 0).sum() > 0.4 * len(small[0])


def test_unicode_punctuation_sometimes(full):
    text = " ".join(full[0].text)
    assert "’" in text and "—" in text and "“" in text
    assert "'" in text  # and plain ASCII in other posts


def test_deterministic_and_seed_dependent(tmp_path):
    a = synth.write(tmp_path / "a", 120, seed=11, mean_words=80)
    b = synth.write(tmp_path / "b", 120, seed=11, mean_words=80)
    c = synth.write(tmp_path / "c", 120, seed=12, mean_words=80)
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()


def test_write_round_trips_and_refuses_overwrite(tmp_path):
    out = tmp_path / "nested" / "dir"
    posts_path, ann_path = synth.write(out, 40, seed=5, mean_words=60)
    assert (posts_path.name, ann_path.name) == ("redsm5_posts.csv", "redsm5_annotations.csv")
    posts, ann = synth.generate(40, seed=5, mean_words=60)
    pd.testing.assert_frame_equal(pd.read_csv(posts_path, encoding="utf-8"), posts)
    pd.testing.assert_frame_equal(pd.read_csv(ann_path, encoding="utf-8"), ann)
    with pytest.raises(FileExistsError, match=re.escape("redsm5_posts.csv")):
        synth.write(out, 40, seed=6)
    posts_path.unlink()
    with pytest.raises(FileExistsError, match=re.escape("redsm5_annotations.csv")):
        synth.write(out, 40, seed=6)
    assert not posts_path.exists()  # refused before writing anything
    synth.write(out, 40, seed=6, overwrite=True)
    assert pd.read_csv(posts_path).post_id.tolist() == synth.generate(40, 6)[0].post_id.tolist()


def test_edge_arguments():
    posts, ann = synth.generate(0, seed=1)
    assert posts.empty and ann.empty and list(posts.columns) == ["post_id", "text"]
    posts, _ = synth.generate(3, seed=1, mean_words=20)
    assert len(posts) == 3
    with pytest.raises(ValueError):
        synth.generate(-1, seed=1)
    with pytest.raises(ValueError):
        synth.generate(10, seed=1, mean_words=0)


def tfidf_baseline_macro_f1(n_posts: int = 600, seed: int = 0, mean_words: int = 80) -> float:
    """Macro-F1 (both classes) of per-criterion TF-IDF + logistic regression on post text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    posts, ann = synth.generate(n_posts, seed=seed, mean_words=mean_words)
    positive = positive_pairs(ann)
    order = np.random.default_rng(seed).permutation(len(posts))
    cut = int(0.7 * len(posts))
    train, test = posts.iloc[order[:cut]], posts.iloc[order[cut:]]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train, x_test = vec.fit_transform(train.text), vec.transform(test.text)
    truth, pred = [], []
    for symptom in synth.SYMPTOMS:
        y_train = [(p, symptom) in positive for p in train.post_id]
        model = LogisticRegression(class_weight="balanced", max_iter=2000)
        model.fit(x_train, y_train)
        truth += [(p, symptom) in positive for p in test.post_id]
        pred += list(model.predict(x_test))
    return f1_score(truth, pred, average="macro")


def test_bag_of_words_baseline_is_learnable_but_not_solved():
    score = tfidf_baseline_macro_f1()
    print(f"TF-IDF + LR macro-F1: {score:.3f}")
    assert 0.6 < score < 0.9


# Held-out templates. Which template made a sentence is read off the output text alone (not
# from generator bookkeeping), so a leak of seen wording into a heldout draw shows up here
# however the generator came to make it.
_TYPO = {" -- ": "(?:—| — | - |, )", "...": r"(?:\.\.\.|…)", "'": "['’]", '"': '["“”]'}


def _literal(text: str) -> str:
    """Regex for literal template text under every typography synth._Style may apply."""
    pieces = re.split(r"( -- |\.\.\.|['\"])", text)
    return "".join(_TYPO.get(piece, re.escape(piece)) for piece in pieces)


def _template_regex(template: str) -> str:
    # A slot is one of its listed values; an opener may come first. Matched case-insensitively
    # because synth lowercases or capitalises the first letter (after an opener, per post).
    def slot(match: re.Match) -> str:
        return "(?:" + "|".join(_literal(v) for v in tpl.SLOTS[match.group(1)]) + ")"

    body = "".join(
        re.sub(r"\{(\w+)\}", slot, piece) if piece.startswith("{") else _literal(piece)
        for piece in re.split(r"(\{\w+\})", template)
    )
    return "(?:" + "|".join(_literal(o) for o in tpl.OPENERS) + ")?" + body


def _labelled_templates() -> dict[str, list[str]]:
    """Every POS, NEG and COMBO template, by the part the split rule puts it in."""
    sides: dict[str, list[str]] = {"seen": [], "heldout": []}
    for table in (tpl.POS, tpl.NEG, tpl.COMBO):
        for items in table.values():
            held = tpl.heldout_indices(len(items))
            for i, item in enumerate(items):
                template = item[1] if isinstance(item, tuple) else item  # NEG: (kind, text)
                sides["heldout" if i in held else "seen"].append(template)
    return sides


_SIDE_RE = {
    side: re.compile("|".join(f"(?:{_template_regex(t)})" for t in templates), re.IGNORECASE)
    for side, templates in _labelled_templates().items()
}


def template_sides(annotations: pd.DataFrame) -> dict[str, set[str]]:
    """Each labelled (symptom, status 0/1) sentence -> the parts whose templates make it."""
    labelled = annotations[annotations.DSM5_symptom.isin(synth.SYMPTOMS)]
    return {
        text: {side for side, regex in _SIDE_RE.items() if regex.fullmatch(text)}
        for text in labelled.sentence_text.unique()
    }


def test_rule_holds_out_every_fourth_template_or_the_last():
    assert tpl.heldout_indices(16) == {3, 7, 11, 15}
    assert tpl.heldout_indices(15) == {3, 7, 11}
    assert tpl.heldout_indices(4) == {3}
    assert tpl.heldout_indices(3) == {2} and tpl.heldout_indices(2) == {1}


def test_seen_and_heldout_split_every_labelled_list():
    seen, held, everything = tpl.part("seen"), tpl.part("heldout"), tpl.part("all")
    n_held = n_all = 0
    for table in ("pos", "neg", "combo"):
        full = getattr(everything, table)
        assert set(getattr(seen, table)) == set(getattr(held, table)) == set(full)
        for key, items in full.items():
            a, b = getattr(seen, table)[key], getattr(held, table)[key]
            assert not set(a) & set(b), (table, key)
            assert sorted(a + b) == sorted(items), (table, key)  # nothing lost or doubled
            assert len(b) >= 1 and len(a) >= 1, (table, key)
            n_held, n_all = n_held + len(b), n_all + len(items)
    assert 0.2 < n_held / n_all < 0.35  # about a quarter overall
    assert everything.pos is tpl.POS and everything.combo is tpl.COMBO
    with pytest.raises(ValueError, match="'unseen'"):
        synth.generate(5, seed=1, templates="unseen")


def test_tracer_tells_the_parts_apart(full):
    # Without this the two tests below could pass on a tracer that finds nothing.
    assert set(map(frozenset, template_sides(full[1]).values())) == {frozenset({"seen"})}
    mixed = template_sides(synth.generate(400, seed=2, templates="all")[1])
    assert set(map(frozenset, mixed.values())) == {frozenset({"seen"}), frozenset({"heldout"})}


def test_heldout_draw_uses_only_heldout_templates(heldout):
    _, ann = heldout
    sides = template_sides(ann)
    leaked = [text for text, found in sides.items() if found != {"heldout"}]
    assert not leaked, leaked[:3]
    assert len(sides) > 200  # a real draw: hundreds of labelled sentences, all held out
    assert set(ann[ann.status == 0].DSM5_symptom) == set(synth.SYMPTOMS)


def test_bundled_sample_never_uses_heldout_templates():
    ann = pd.read_csv(SAMPLE_DIR / synth.ANNOTATIONS_FILE, encoding="utf-8")
    sides = template_sides(ann)
    leaked = [text for text, found in sides.items() if found != {"seen"}]
    assert not leaked, leaked[:3]
    assert len(sides) > 200


def test_heldout_cli_writes_the_heldout_draw(tmp_path):
    out = tmp_path / "held"
    cmd = [sys.executable, "-m", "nli_tune.data", "synth", "--out", str(out), "--posts", "30"]
    r = subprocess.run([*cmd, "--seed", "2", "--templates", "heldout"], capture_output=True)
    assert r.returncode == 0, r.stderr
    _, ann = synth.generate(30, seed=2, templates="heldout")
    pd.testing.assert_frame_equal(pd.read_csv(out / synth.ANNOTATIONS_FILE), ann)
    usage = subprocess.run([*cmd, "--help"], capture_output=True, text=True).stdout
    assert "the bundled sample never uses, to test generalisation" in " ".join(usage.split())
    bad = subprocess.run([*cmd, "--templates", "unseen"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'unseen'" in bad.stderr
    with pytest.raises(ValueError, match="'unseen'"):
        synth.write(tmp_path / "w", 5, seed=1, templates="unseen")
    assert not (tmp_path / "w").exists()  # refused before writing anything
