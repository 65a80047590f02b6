"""Search-space validation happens before Ray: bad files exit 2 naming the key/value."""

import subprocess
import sys

import pytest

from nli_tune import SPACES_DIR
from nli_tune.errors import UserError
from nli_tune.space import load_space

BUNDLED = ("pooling", "smoke", "full", "gpu")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_spaces_are_valid(name):
    space = load_space(str(SPACES_DIR / f"{name}.yaml"))
    assert space.name == name and space.num_samples >= 2 and space.folds >= 2
    header = [ln for ln in (SPACES_DIR / f"{name}.yaml").read_text().splitlines() if ln[:1] == "#"]
    assert any(ln.startswith("# Launch:  python -m nli_tune.search --space") for ln in header)


def test_pooling_space_searches_the_required_params():
    space = load_space("pooling")  # a bundled name works like a path
    assert {"pooling", "rank", "lr", "batch_size"} <= set(space.params)
    assert space.num_samples >= 8 and space.folds >= 3 and space.scheduler == "asha"
    assert space.fixed["model"] == "gemma-3-270m"


def test_full_space_covers_the_wide_search():
    space = load_space("full")
    assert {
        "rank",
        "alpha",
        "lr",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
        "head_dropout",
        "max_length",
        "attention",
    } <= set(space.params)


BASE = "name: t\nnum_samples: 2\nfolds: 2\nparams:\n  lr: {loguniform: [1.0e-4, 1.0e-3]}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BASE + "sampler: tpe\n", "unknown key 'sampler'"),
        (BASE.replace("lr:", "learning_rate:"), "params.learning_rate: unknown training-config"),
        (BASE.replace("loguniform", "lognormal"), "unknown distribution 'lognormal'"),
        (BASE.replace("1.0e-4", "0.0"), "loguniform bounds must be positive, got 0.0"),
        (BASE.replace("1.0e-4", "-1.0"), "loguniform bounds must be positive"),
        (BASE + "  pooling: {choice: []}\n", "choice needs a non-empty list"),
        (BASE + "  pooling: {choice: [mean, gem]}\n", "params.pooling: value 'gem' is invalid"),
        (BASE.replace("folds: 2", "folds: 1"), "folds 1: must be an integer >= 2"),
        (BASE.replace("[1.0e-4, 1.0e-3]", "[1.0e-3, 1.0e-4]"), "low 0.001 must be below high"),
        (BASE + "fixed:\n  pooling: gem\n", "config key 'pooling' = 'gem'"),
        (BASE + "fixed:\n  lr: 0.1\n", "params.lr: also in fixed"),
        (BASE.replace("scheduler", "x") + "scheduler: hyperband\n", "scheduler 'hyperband'"),
    ],
)
def test_bad_space_is_a_user_error(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        load_space(str(path))


def test_misplaced_bundled_name_points_to_the_bundled_file(tmp_path):
    with pytest.raises(UserError, match="a bundled space of that name is at .*pooling.yaml"):
        load_space("configs/pooling.yaml")
    with pytest.raises(UserError, match="search space not found"):
        load_space("nonsense")


def test_search_cli_rejects_bad_space_with_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("loguniform", "gaussian"))
    out = tmp_path / "outputs"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nli_tune.search",
            "--space",
            str(bad),
            "--output",
            str(out),
            "--mlflow-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "unknown distribution 'gaussian'" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
