"""Files and folders that appear whole or not at all."""

import pytest

from nli_tune.core.outputs import atomic_dir, atomic_write_text


def test_atomic_write_text_replaces_whole_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "cv_results.csv"
    target.write_text("old\n")
    atomic_write_text(target, "trial_id,mlflow_run_id\nabc,123\n")
    assert target.read_text() == "trial_id,mlflow_run_id\nabc,123\n"
    with pytest.raises(TypeError):
        atomic_write_text(target, None)  # fails mid-write: the old file stays as it was
    assert target.read_text() == "trial_id,mlflow_run_id\nabc,123\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv_results.csv"]


def test_atomic_dir_keeps_the_old_folder_when_the_run_fails(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("training failed")
    assert (target / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
