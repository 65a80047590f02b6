"""Units of posts and their evidence labels, located from the annotations."""

import subprocess
import sys

import numpy as np

from nli_tune import SAMPLE_DIR
from nli_tune.redsm5 import synth
from nli_tune.redsm5.load import criterion_keys, load_redsm5
from nli_tune.units.evidence import build_units
from tests.helpers import redsm5

SLEEP = criterion_keys().index("SLEEP_ISSUES")
MOOD = criterion_keys().index("DEPRESSED_MOOD")


def test_every_synthetic_annotation_is_located_and_labels_its_unit(tmp_path):
    synth.write(tmp_path, 120, seed=5, mean_words=120)
    data = load_redsm5(tmp_path)
    table, report = build_units(data)
    crit_rows = data.annotations[data.annotations["DSM5_symptom"].isin(criterion_keys())]
    assert report.annotations == len(crit_rows) > 100
    assert report.located == report.annotations and report.not_located == 0
    assert not table.external.any()
    text = data.texts()
    labels = data.pairs().pivot(index="post_id", columns="criterion", values="label")
    for pid in data.posts["post_id"]:
        rows = table.post_ids == pid
        for c, key in enumerate(criterion_keys()):
            ev = table.evidence[rows, c]
            if labels.loc[pid, key]:  # matched: its evidence units, and only those, are 1
                assert ev.max() == 1 and ev.min() == 0
                for s, e in zip(
                    table.starts[rows][ev == 1], table.ends[rows][ev == 1], strict=True
                ):
                    unit = text[pid][s:e]
                    assert any(
                        sent.strip() in unit or unit in sent
                        for sent in crit_rows[
                            (crit_rows.post_id == pid)
                            & (crit_rows.DSM5_symptom == key)
                            & (crit_rows.status == 1)
                        ].sentence_text
                    )
            else:
                assert (ev == 0).all()
    # Explicit absences (status 0) are marked as hard negatives on their units.
    assert table.hard.sum() >= (crit_rows.status == 0).sum() * 0.9


def test_units_point_back_into_the_text_of_their_post():
    data = load_redsm5(SAMPLE_DIR)
    text = data.texts()
    for unit in ("sentence", "window", "post"):
        table, _ = build_units(data, unit, window_sentences=3, window_stride=2)
        for pid, s, e, t in zip(table.post_ids, table.starts, table.ends, table.texts, strict=True):
            assert 0 <= s < e <= len(text[pid]) and text[pid][s:e] == t == t.strip()


def test_unlocated_annotations_become_external_units_with_their_labels():
    post = "I barely sleep these days. The weather was nice."
    rows = [
        ("a", "I barely sleep these days.", "SLEEP_ISSUES", 1),  # verbatim
        ("a", "Sleeping is hard for me lately", "SLEEP_ISSUES", 1),  # paraphrased: not found
        ("b", "My mood is fine now.", "DEPRESSED_MOOD", 0),  # not found, an absence
    ]
    data = redsm5({"a": post, "b": "Nothing much to report today."}, rows)
    table, report = build_units(data)
    assert (report.annotations, report.exact, report.not_located) == (3, 1, 2)
    ext = np.flatnonzero(table.external)
    assert [table.texts[i] for i in ext] == [
        "Sleeping is hard for me lately",
        "My mood is fine now.",
    ]
    assert table.evidence[ext[0], SLEEP] == 1 and table.evidence[ext[1], MOOD] == 0
    assert table.hard[ext[1], MOOD] and not table.hard[ext[0]].any()
    # Post a's second sentence: not all of its SLEEP evidence was located, so unknown.
    inside = np.flatnonzero((table.post_ids == "a") & ~table.external)
    assert table.evidence[inside, SLEEP].tolist() == [1, -1]
    assert table.annotated[inside, SLEEP].tolist() == [True, False]


def test_data_check_reports_located_annotations(real_sample):
    r = subprocess.run(
        [sys.executable, "-m", "nli_tune.data", "check", "--data-dir", str(real_sample)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    data = load_redsm5(real_sample)
    _, report = build_units(data)
    n = int(data.annotations["DSM5_symptom"].isin(criterion_keys()).sum())
    assert report.annotations == n
    # The public sample was paraphrased apart from its posts: nothing is found verbatim.
    assert report.exact == 0
    assert f"annotations located in their posts: {report.located} of {n}" in r.stdout
