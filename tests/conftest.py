import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Search tests share 2 CPUs with a session-long Ray: a trial's fold workers can queue behind
# the previous trial's teardown longer than the 120 s a search allows by default.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

REPO = Path(__file__).resolve().parent.parent
REAL_SAMPLE = REPO.parent / "shared" / "redsm5-sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not REAL_SAMPLE.is_dir():
        pytest.skip("../shared/redsm5-sample is not present")
    return REAL_SAMPLE


def run_train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m nli_tune.train ARGS` in a subprocess, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "nli_tune.train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(output folder, stdout, stderr) of one tiny-random `train` run on the bundled sample
    (fp32, so that predict can be compared with it exactly)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = {
        "model": "tiny-random",
        "num_layers": None,
        "max_length": 96,
        "epochs": 1,
        "batch_size": 32,
        "seed": 3,
        "split_seed": 3,
        "precision": "fp32",
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "out"
    # Random weights never learn: one fit, kept (test_train checks the retries).
    r = run_train("--config", str(tmp / "cfg.yaml"), "--output", str(out), "--retries", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout, r.stderr


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One local Ray cluster (with dashboard) for every search test of the session."""
    from nli_tune.search import LOCAL_RAY_ENV, RAY_ENV

    ray_bin = str(Path(sys.executable).parent / "ray")
    # A local cluster, like the one a search without --address starts: no preemption watcher
    # (a process per trial). The searches get --address, so they cannot tell it is local.
    env = os.environ | RAY_ENV | LOCAL_RAY_ENV
    started = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    # "auto", not the printed ip:port: Ray 2.60 drivers given an explicit address do not
    # send the cluster's auth token (InvalidAuthToken), while "auto" does.
    yield "auto"
    subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120, env=env)
