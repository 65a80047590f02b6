import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nli_tune.core.errors import UserError
from nli_tune.redsm5.load import criterion_keys, load_redsm5, stats

POSTS = "redsm5_posts.csv"
ANN = "redsm5_annotations.csv"
HEADER = "post_id,sentence_id,sentence_text,DSM5_symptom,status,explanation\n"


def _expected_matched(sample: Path) -> set[tuple[str, str]]:
    """Independent count with the csv module: (post, symptom) with any status-1 row."""
    path = next(sample.glob("redsm5_annotations*.csv"))
    with path.open(encoding="utf-8") as f:
        return {
            (r["post_id"], r["DSM5_symptom"])
            for r in csv.DictReader(f)
            if r["status"] == "1" and r["DSM5_symptom"] != "SPECIAL_CASE"
        }


def test_real_sample_pairs(real_sample):
    data = load_redsm5(real_sample)
    pairs = data.pairs()
    assert len(data.posts) == 17 and len(pairs) == 153
    assert set(pairs["criterion"]) == set(criterion_keys()) and len(criterion_keys()) == 9
    expected = _expected_matched(real_sample)
    got = {(p, c) for p, c, y in pairs.itertuples(index=False) if y == 1}
    assert got == expected and len(got) == 20
    # s_1270_9 has two status-1 SLEEP_ISSUES sentences: still one matched pair.
    assert ("s_1270_9", "SLEEP_ISSUES") in got
    # s_1955_1069's only row is a clinician negative: all its pairs are 0.
    assert pairs[pairs["post_id"] == "s_1955_1069"]["label"].sum() == 0


def test_check_cli_reports_counts(real_sample):
    out = subprocess.run(
        [sys.executable, "-m", "nli_tune.data", "check", "--data-dir", str(real_sample)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "posts 17" in out and "pairs 153" in out and "matched pairs 20" in out
    s = stats(load_redsm5(real_sample))
    assert sum(s["matched_per_criterion"].values()) == 20 and s["negative_annotations"] == 4


def _write(d: Path, posts: str, ann: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / POSTS).write_text(posts, encoding="utf-8")
    (d / ANN).write_text(ann, encoding="utf-8")
    return d


GOOD_POSTS = "post_id,text\np1,I cannot sleep at all.\np2,Nice weather today.\n"
GOOD_ANN = HEADER + "p1,p1_1,I cannot sleep at all.,SLEEP_ISSUES,1,x\n"


@pytest.mark.parametrize(
    ("posts", "ann", "fragment"),
    [
        ("post_id,body\np1,x\n", GOOD_ANN, "missing column 'text'"),
        ("post_id,text\np1,a\np1,b\n", HEADER, "duplicate post_id 'p1'"),
        (GOOD_POSTS, HEADER + "p9,p9_1,x,SLEEP_ISSUES,1,x\n", "unknown post_id 'p9'"),
        (GOOD_POSTS, HEADER + "p1,p1_1,x,INSOMNIA,1,x\n", "unknown DSM5_symptom 'INSOMNIA'"),
        (GOOD_POSTS, HEADER + "p1,p1_1,x,SLEEP_ISSUES,2,x\n", "status '2' is not 0 or 1"),
        ("post_id,text\np1,   \n", HEADER, "empty text for post_id 'p1'"),
        ("", GOOD_ANN, "file is empty"),
        ("post_id,text\n", HEADER, "no posts"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, posts, ann, fragment):
    d = _write(tmp_path / "d", posts, ann)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        load_redsm5(d)


def test_non_utf8_and_missing(tmp_path):
    d = _write(tmp_path / "d", GOOD_POSTS, GOOD_ANN)
    (d / POSTS).write_bytes(b"post_id,text\np1,caf\xe9\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_redsm5(d)
    with pytest.raises(UserError, match="data directory not found"):
        load_redsm5(tmp_path / "nope")
    (d / POSTS).unlink()
    with pytest.raises(UserError, match=r"no file matching redsm5_posts\*\.csv"):
        load_redsm5(d)


def test_cli_bad_input_exits_2_one_line_no_traceback(tmp_path):
    d = _write(tmp_path / "d", GOOD_POSTS, HEADER + "p1,p1_1,x,SLEEP_ISSUES,yes,x\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = subprocess.run(
        [sys.executable, "-m", "nli_tune.data", "check", "--data-dir", str(d)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "status 'yes'" in lines[0] and ANN in lines[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_special_case_counted_never_paired(tmp_path):
    ann = GOOD_ANN + "p2,p2_1,Nice weather today.,SPECIAL_CASE,1,x\n"
    data = load_redsm5(_write(tmp_path / "d", GOOD_POSTS, ann))
    pairs = data.pairs()
    assert "SPECIAL_CASE" not in set(pairs["criterion"]) and len(pairs) == 18
    assert stats(data)["special_case_posts"] == 1
    assert int(pairs["label"].sum()) == 1


def test_official_file_names_work(tmp_path, real_sample):
    d = tmp_path / "official"
    d.mkdir()
    shutil.copy(next(real_sample.glob("redsm5_posts*.csv")), d / POSTS)
    shutil.copy(next(real_sample.glob("redsm5_annotations*.csv")), d / ANN)
    assert len(load_redsm5(d).pairs()) == 153
