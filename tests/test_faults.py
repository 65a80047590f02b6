"""Faults a cluster really has, injected into real searches (tiny-random, local Ray): a
fold worker killed mid-trial, a trial whose fold raises. Numbers are checked afterwards:
rows, statuses, epochs, MLflow runs and their metric histories."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nli_tune.core.outputs import read_table
from tests.test_search import SMOKE, _runs, _search, _search_cmd, _space


def _processes_titled(prefix: str) -> list[int]:
    """pids of this machine's processes whose command line starts with `prefix` (Ray
    titles an actor's process `ray::<class>.<method>`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(prefix):
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def faults(tmp_path_factory, ray_address):
    """One search of two trials, one at a time: trial 1's fold worker is SIGKILLed once the
    trial has reported epoch 1; trial 2's fold 0 raises (injected) on every attempt."""
    tmp = tmp_path_factory.mktemp("faults")
    points = [{"pooling": "mean", "lr": 5e-3}, {"pooling": "attention", "lr": 5e-3}]
    fixed = SMOKE["fixed"] | {"epochs": 4, "patience": 0}
    space = _space(tmp, "faults", points_to_evaluate=points, fixed=fixed)
    env = {"NLI_TUNE_INJECT_ERROR": "pooling=attention"}
    proc = _search(tmp, space, ray_address, wait=False, env=env)
    exp_dir = tmp / "outputs" / "faults" / "ray" / "faults"
    killed, deadline = None, time.time() + 600
    while killed is None and time.time() < deadline and proc.poll() is None:
        reported = [len(p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")]
        pids = _processes_titled("ray::RayTrainWorker")
        # trial 1 has reported an epoch but not its last; trial 2 has not started
        if len(reported) == 1 and 1 <= reported[0] < 4 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=900)
    assert killed, "no fold worker was killed: " + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    return tmp, out


def test_killed_fold_worker_resumes_from_its_checkpoint(faults):
    tmp, out = faults
    table = read_table(tmp / "outputs" / "faults" / "cv_results.csv")
    row = table[table["pooling"] == "mean"].iloc[0]
    assert row["status"] == "completed" and row["epochs"] == 4
    assert all(0 <= row[f"fold{k}_macro_f1"] <= 1 for k in range(2))
    client, _, children = _runs(tmp, "faults")
    run = next(c for c in children if c.info.run_id == row["mlflow_run_id"])
    for name in ("cv_macro_f1", "fold0_macro_f1", "fold1_macro_f1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [1, 2, 3, 4], (name, steps)  # resumed, not restarted or inflated
    assert run.data.tags["worker_failures"] == "1"
    assert run.data.tags["status"] == "completed" and run.info.status == "FINISHED"
    epochs = read_table(tmp / "outputs" / "faults" / "epochs.csv")
    assert sorted(epochs[epochs["trial_id"] == row["trial_id"]]["epoch"]) == [1, 2, 3, 4]
    assert re.search(rf"{row['trial_id']} recovered: Ray Train restarted its fold workers", out)


def test_failing_trial_is_recorded_and_the_search_goes_on(faults):
    tmp, out = faults
    run_dir = tmp / "outputs" / "faults"
    table = read_table(run_dir / "cv_results.csv")
    assert len(table) == 2
    bad = table[table["pooling"] == "attention"].iloc[0]
    assert bad["status"] == "failed"
    assert bad["error"].startswith("fold 0: RuntimeError: injected by NLI_TUNE_INJECT_ERROR")
    assert "\n" not in bad["error"]
    client, parents, children = _runs(tmp, "faults")
    assert len(parents) == 1 and len(children) == 2
    run = next(c for c in children if c.info.run_id == bad["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert run.data.tags["error"] == bad["error"]
    assert f"{bad['trial_id']} FAILED: fold 0: RuntimeError: injected" in out
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    assert best["pooling"] == "mean"  # the best of the rest
    assert parents[0].info.status == "FINISHED"


def test_killed_driver_then_resume_gives_exactly_n_trials(tmp_path, ray_address):
    """SIGKILL of the search (as by the OOM killer) once one trial has finished, then the
    same command with --resume: every trial exactly once, in cv_results, in MLflow and in
    the Optuna study (optuna.db), with the value cv_results has."""
    import optuna

    space = _space(tmp_path, "resume", num_samples=3)
    proc = _search(tmp_path, space, ray_address, wait=False)
    exp_dir = tmp_path / "outputs" / "resume" / "ray" / "resume"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        epochs = [len(p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")]
        if max(epochs, default=0) >= 2:  # one trial has reported both its epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tmp_path / "outputs" / "resume" / "cv_results.csv").exists()
    finished_before = {
        p.parent.name.split("_")[2]
        for p in exp_dir.glob("*/result.json")
        if len(p.read_text().splitlines()) >= 2
    }

    _search(tmp_path, space, ray_address, "--resume")
    table = read_table(tmp_path / "outputs" / "resume" / "cv_results.csv")
    assert len(table) == 3 and set(table["status"]) == {"completed"}
    client, parents, children = _runs(tmp_path, "resume")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    assert set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
    for c in children:  # no epoch logged twice
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "cv_macro_f1")]
        assert steps == [1, 2], steps
    assert finished_before <= set(table["trial_id"])
    storage = f"sqlite:///{tmp_path / 'outputs' / 'resume' / 'optuna.db'}"
    study = optuna.load_study(study_name="resume", storage=storage)
    tune_ids = sorted(t.user_attrs["tune_trial_id"] for t in study.trials)
    assert tune_ids == sorted(table["trial_id"]), (tune_ids, list(table["trial_id"]))
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    metric = table.set_index("trial_id")["cv_roc_auc_within"]  # the searcher's metric
    for trial in study.trials:
        assert trial.value == pytest.approx(metric[trial.user_attrs["tune_trial_id"]])


def _actor_pids(title: str) -> dict[int, int]:
    """pid -> parent pid of this machine's Ray actor processes titled `ray::<title>...`
    (a worker process's parent is the raylet of its node)."""
    found = {}
    for pid in _processes_titled(f"ray::{title}"):
        stat = Path(f"/proc/{pid}/stat").read_text()
        found[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def test_lost_node_mid_trial_is_survived(tmp_path):
    """A local cluster (`ray.cluster_utils.Cluster`): a head without CPUs and two worker
    nodes of 1 CPU. A fold needs 0.75 CPU, so each node holds one of the two folds, and
    one of them also the trial's driver (0.25). Once the trial has reported epoch 1, that
    node is removed (the harder loss: a fold and the trial's driver) and a replacement
    joins, as an autoscaler would add one. The trial continues from its checkpoint."""
    from ray._private.ray_constants import PROCESS_TYPE_RAYLET
    from ray._private.utils import read_ray_address, write_ray_address
    from ray.cluster_utils import Cluster

    before = read_ray_address()  # Cluster points `address="auto"` at itself: undone below
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        raylets = {n.all_processes[PROCESS_TYPE_RAYLET][0].process.pid: n for n in nodes}
        shared = tmp_path / "shared"  # every node of a real cluster mounts it
        shared.mkdir()
        fixed = SMOKE["fixed"] | {"epochs": 4, "patience": 0}
        resources = {"cpus_per_worker": 0.75, "driver_cpus": 0.25}
        space = _space(tmp_path, "lost", num_samples=1, fixed=fixed, resources=resources)
        proc = _search(tmp_path, space, cluster.address, "--storage", str(shared), wait=False)
        exp_dir = shared / "lost"
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if [len(p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")] == [1]:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the search ended before the node could be removed"
        drivers = _actor_pids("ImplicitFunc")  # the Tune trial's function actor
        workers = _actor_pids("RayTrainWorker")
        assert len(drivers) == 1 and len(workers) == 2
        host = next(iter(drivers.values()))
        assert sorted(workers.values()) == sorted(raylets), "the folds share a node"
        cluster.remove_node(raylets[host], allow_graceful=False)
        time.sleep(2)
        cluster.add_node(num_cpus=1)
        out, _ = proc.communicate(timeout=900)
    finally:
        cluster.shutdown()
        if before:
            write_ray_address(before)
    assert proc.returncode == 0, out[-4000:]
    table = read_table(tmp_path / "outputs" / "lost" / "cv_results.csv")
    assert len(table) == 1 and table["status"].tolist() == ["completed"]
    assert table["epochs"].tolist() == [4]
    client, parents, children = _runs(tmp_path, "lost")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "cv_macro_f1")]
    assert steps == [1, 2, 3, 4]  # continued from the epoch-1 checkpoint, nothing repeated
    assert children[0].data.tags["trial_restarts"] == "1"
    assert re.search(rf"{table['trial_id'][0]} restarting after: ", out), out[-3000:]
    assert "is already reported" not in out  # the restored epoch's re-report is expected
    # Two clusters on this machine: the search used the one it was given, never the newest
    assert "Found multiple active Ray instances" not in out, out[-3000:]


def test_unreachable_mlflow_is_replayed_on_resume(tmp_path, ray_address):
    """The MLflow server goes away once trial 1 has logged epoch 1: the search finishes,
    keeps the rest in a file and says so once; --resume, with the server back, replays it
    with no run or epoch twice and fills in the run ids the outputs lacked."""
    from mlflow import MlflowClient

    from tests.browser import free_port, server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    cmd += ["--artifacts-destination", str(tmp_path / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    space = _space(tmp_path, "offline")
    exp_dir = tmp_path / "outputs" / "offline" / "ray" / "offline"
    with server(cmd, f"{url}/health", tmp_path / "mlflow1.log", 180):
        proc = _search(tmp_path, space, ray_address, "--mlflow-uri", url, wait=False)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if any(p.read_text().strip() for p in exp_dir.glob("*/result.json")):
                break
            time.sleep(0.2)
        time.sleep(1)  # the callback logs epoch 1 right after Tune records it
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    run_dir = tmp_path / "outputs" / "offline"
    pending = run_dir / "mlflow_pending.jsonl"
    assert pending.exists() and (run_dir / "report.html").exists()
    assert len([ln for ln in out.splitlines() if ln.startswith("MLflow failed")]) == 1, out
    assert "unreachable; its records wait in" in out
    table = read_table(run_dir / "cv_results.csv")
    assert len(table) == 2 and set(table["status"]) == {"completed"}

    # Still down: --resume says so in one line (exit 2) and keeps every record and file.
    kept = {f: (run_dir / f).read_bytes() for f in ("mlflow_pending.jsonl", "cv_results.csv")}
    again = [*_search_cmd(tmp_path, space, ray_address), "--mlflow-uri", url, "--resume"]
    r = subprocess.run(again, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "MLflow cannot use it" in r.stderr, r.stderr[-2000:]
    assert "the records stay in" in r.stderr and "Run --resume again" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert {f: (run_dir / f).read_bytes() for f in kept} == kept

    with server(cmd, f"{url}/health", tmp_path / "mlflow2.log", 180):
        r = _search(tmp_path, space, ray_address, "--mlflow-uri", url, "--resume")
        assert "MLflow: replayed" in r and "had finished" in r
        assert not pending.exists()
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("offline")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("role") == "search"]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
        for c in children:
            steps = [m.step for m in client.get_metric_history(c.info.run_id, "cv_macro_f1")]
            assert steps == [1, 2], steps
        table = read_table(run_dir / "cv_results.csv")
        assert set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
        best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
        assert best["search"]["mlflow_run_id"] in set(table["mlflow_run_id"])
        names = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        assert {"best_config.yaml", "cv_results.csv", "report.html"} <= names
        metric = best["search"]["selected_by"]
        assert parents[0].data.metrics[f"best_{metric}"] == pytest.approx(table[metric].max())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# 15 min on 2 cores, more than half the suite's budget: deselected by default (pyproject's
# addopts), `python -m pytest -m load` runs it.
@pytest.mark.load
def test_forty_trials_two_at_a_time_leave_nothing_behind(tmp_path, ray_address):
    """Load: 40 one-epoch trials, 2 at a time (0.25 CPU per fold worker and driver). Every
    trial gets its row and its nested run, the end-of-search sweep finds no placement
    group left behind, and the driver's memory stays flat (figure printed). Measured on the
    2-core box: 40 trials in 15.5 min, driver RSS 682 MB at the first trial, peak 704 MB."""
    from ray.util.placement_group import placement_group_table

    fixed = SMOKE["fixed"] | {"epochs": 1, "patience": 0}
    resources = {"cpus_per_worker": 0.25, "driver_cpus": 0.25}
    space = _space(tmp_path, "load", num_samples=40, fixed=fixed, resources=resources)
    started = time.monotonic()
    proc = _search(tmp_path, space, ray_address, "--no-report", wait=False)
    exp_dir = tmp_path / "outputs" / "load" / "ray" / "load"
    baseline, peak = None, 0.0
    while proc.poll() is None:
        try:
            rss = _rss_mb(proc.pid)
        except OSError:
            break
        if baseline is None and any(exp_dir.glob("*/result.json")):
            baseline = rss  # Ray connected, data shared, the first trial running
        peak = max(peak, rss)
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-4000:]
    assert "cluster: 2 CPUs, 0 GPUs -> 2 trial(s) at a time" in out
    table = read_table(tmp_path / "outputs" / "load" / "cv_results.csv")
    assert len(table) == 40 and set(table["status"]) == {"completed"}
    assert table["trial_id"].is_unique
    _, parents, children = _runs(tmp_path, "load")
    assert len(parents) == 1 and len(children) == 40
    assert set(table["mlflow_run_id"]) == {c.info.run_id for c in children}
    assert "placement group(s) that ended trials had left behind" not in out
    import ray

    ray.init(address=ray_address, logging_level="ERROR")
    try:
        alive = [g for g in placement_group_table().values() if g["state"] != "REMOVED"]
    finally:
        ray.shutdown()
    assert alive == []
    growth = peak - baseline
    print(f"driver RSS: {baseline:.0f} MB at the first trial, peak {peak:.0f} MB (+{growth:.0f})")
    assert growth < 300, (baseline, peak)
    if out_file := os.environ.get("NLI_TUNE_LOAD_JSON"):  # scripts/record-benchmark reads it
        figures = {
            "trials": len(table),
            "completed": int((table["status"] == "completed").sum()),
            "nested_runs": len(children),
            "placement_groups_left": len(alive),
            "search_wall_s": round(time.monotonic() - started, 1),
            "driver_rss_mb_first_trial": round(baseline),
            "driver_rss_mb_peak": round(peak),
        }
        Path(out_file).write_text(json.dumps(figures, indent=2))
