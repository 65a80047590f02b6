"""The distributed search on one session-scoped local Ray (tiny-random: mechanics only)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from nli_tune import SAMPLE_DIR, SPACES_DIR
from nli_tune.core.config import TrainConfig
from nli_tune.core.outputs import read_table
from tests.browser import browser_page, free_port, server, shoot
from tests.helpers import doc_command
from tests.test_train import assert_no_post_text, run_train

SMOKE = {
    "num_samples": 2,
    "folds": 2,
    "scheduler": "none",
    "seed": 0,
    "params": {
        "pooling": {"choice": ["mean", "attention"]},
        "lr": {"loguniform": [1.0e-3, 1.0e-2]},
    },
    "fixed": {
        "model": "tiny-random",
        "num_layers": None,
        "max_length": 96,
        "epochs": 2,
        "batch_size": 32,
        # nli: a pass per (unit, criterion), epochs long enough for the fault tests to
        # act between two of them (the smoke fixture runs the multilabel default)
        "pairing": "nli",
    },
    "resources": {"cpus_per_worker": 0.5, "driver_cpus": 0.25},
    "confirm": "none",  # the smoke fixture (search_spaces/smoke.yaml) tests the stage
}


def _space(tmp: Path, name: str, **overrides) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **SMOKE, **overrides}))
    return path


def _without_epochs(fixed: dict) -> dict:
    return {k: v for k, v in fixed.items() if k != "epochs"}  # for spaces that search it


def _search_cmd(tmp: Path, space: Path, address: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nli_tune.search",
        "--space",
        str(space),
        "--output",
        str(tmp / "outputs"),
        "--mlflow-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--address",
        address,
        *extra,
    ]


def _search(
    tmp: Path, space: Path, address: str, *extra: str, wait: bool = True, env: dict | None = None
):
    cmd = _search_cmd(tmp, space, address, *extra)
    env = os.environ | (env or {})
    if not wait:
        return subprocess.Popen(
            cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout


def _interrupt_when(proc, exp_dir: Path, ready) -> str:
    """Send Ctrl-C once `ready(epochs reported by each trial so far)`; return the output of
    the search, which must stop as interrupted (exit 130)."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        epochs = [len(p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")]
        if ready(epochs):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    return out


def _runs(tmp: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, ray_address):
    """The smoke search exactly as docs/search.md shows it (its bundled space), pointed at
    this session's cluster, MLflow store and outputs."""
    tmp = tmp_path_factory.mktemp("smoke")
    argv = doc_command("--space search_spaces/smoke.yaml")
    extra = ["--output", str(tmp / "outputs"), "--mlflow-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    r = subprocess.run(
        [*argv, *extra, "--address", ray_address],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return tmp, r.stdout


def _search_rows(table):
    return table[table["stage"] == "search"]


def test_smoke_cv_results_match_mlflow(smoke):
    tmp, _ = smoke
    run_dir = tmp / "outputs" / "smoke"
    table = read_table(run_dir / "cv_results.csv")
    # 2 search trials and the confirmation rerun of the best one (confirm: top 1, seeds 1)
    assert list(table["stage"]) == ["search", "search", "confirmation"]
    assert len(table) == 3 and set(table["status"]) == {"completed"}
    assert (table["epochs"] == 2).all() and sorted(_search_rows(table)["cv_rank"]) == [1, 2]
    client, parents, children = _runs(tmp, "smoke")
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    by_id = {c.info.run_id: c for c in children}
    for row in table.itertuples():
        run = by_id[row.mlflow_run_id]
        assert run.data.tags["stage"] == row.stage
        # A confirmation trial has no rungs: its folds score at its last epoch only.
        scored = [1, 2] if row.stage == "search" else [2]
        folds, aucs = [], []
        for k in range(2):
            history = client.get_metric_history(run.info.run_id, f"fold{k}_macro_f1")
            assert [m.step for m in history] == scored
            assert history[-1].value == pytest.approx(getattr(row, f"fold{k}_macro_f1"))
            folds.append(history[-1].value)
            aucs.append(client.get_metric_history(run.info.run_id, f"fold{k}_roc_auc")[-1].value)
        assert row.cv_macro_f1 == pytest.approx(np.mean(folds))
        assert row.cv_macro_f1_std == pytest.approx(np.std(folds))
        assert 0 < row.cv_roc_auc < 1 and row.cv_roc_auc == pytest.approx(np.mean(aucs))
        cv = client.get_metric_history(run.info.run_id, "cv_macro_f1")
        assert [m.step for m in cv] == scored and cv[-1].value == pytest.approx(row.cv_macro_f1)
        assert run.data.params["pooling"] == row.pooling and run.data.params["folds"] == "2"
        assert run.data.tags["status"] == "completed"
        # Where a trial's time went: its slowest fold's epochs, summed, and the rest.
        slowest = [
            max(
                client.get_metric_history(run.info.run_id, f"fold{k}_compute_seconds")[e].value
                for k in range(2)
            )
            for e in range(len(scored))
        ]
        assert row.compute_s == pytest.approx(sum(slowest)) and row.compute_s > 0
        assert row.overhead_s == pytest.approx(row.wall_s - row.compute_s) and row.overhead_s > 0
        assert 100 < row.worker_peak_rss_mb < 8000 and row.worker_tokens_per_s > 0
        # Every fold fit its own recorded seed, and the learned-fit rule's verdict on it.
        for k in range(2):
            seed = client.get_metric_history(run.info.run_id, f"fold{k}_seed")[-1].value
            assert seed == getattr(row, f"fold{k}_seed") and getattr(row, f"fold{k}_learned") == 1
    seeds = table[["fold0_seed", "fold1_seed"]].to_numpy().ravel()
    assert len(set(seeds)) == 6  # no two fits of the search drew the same luck
    rerun = table.iloc[2]
    assert rerun["confirms"] == table.iloc[0]["trial_id"] and rerun["repeat"] == 1
    assert by_id[rerun["mlflow_run_id"]].data.tags["confirms"] == rerun["confirms"]
    assert (rerun["pooling"], rerun["lr"]) == (table.iloc[0]["pooling"], table.iloc[0]["lr"])


def test_progress_lines_follow_every_trial(smoke):
    tmp, stdout = smoke
    table = read_table(tmp / "outputs" / "smoke" / "cv_results.csv")
    client, _, _ = _runs(tmp, "smoke")
    assert "Trial status:" not in stdout  # Ray's wide table is replaced by these lines
    # and Tune's start-up box and TensorBoard hint are not printed above them
    assert "Search algorithm" not in stdout and "TensorBoard" not in stdout
    for row in _search_rows(table).itertuples():
        mine = [ln for ln in stdout.splitlines() if re.match(rf"\[\d/2\] {row.trial_id} ", ln)]
        start = mine[0].split("] ")[1]
        assert start.startswith(f"{row.trial_id} start  ")
        assert f"pooling={row.pooling}" in start and f"lr={row.lr:.3g}" in start
        history = client.get_metric_history(row.mlflow_run_id, "cv_macro_f1")
        epochs = [ln for ln in mine if " epoch " in ln]
        assert [ln.split(" epoch ")[1].split()[0] for ln in epochs] == ["1/2", "2/2"]
        for line, metric in zip(epochs, history, strict=True):
            assert f"cv macro-F1 {metric.value:.3f} ± " in line
        last = f"completed after 2 epochs: within-AUC {row.cv_roc_auc_within:.3f}"
        assert mine[-1].endswith(last)
        assert all(len(ln) <= 100 for ln in mine[1:])
    rerun = table[table["stage"] == "confirmation"].iloc[0]
    assert (
        f"confirmation: the top 1 completed configs ({rerun['confirms']}) again with 1 new "
        f"seed(s) each: 1 trials at full epochs" in stdout
    )
    assert re.search(rf"\[1/1\] {rerun['trial_id']} completed after 2 epochs", stdout)


def test_best_config_is_the_top_trial_and_trains(smoke):
    tmp, stdout = smoke
    run_dir = tmp / "outputs" / "smoke"
    table = read_table(run_dir / "cv_results.csv")
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    metric = "cv_roc_auc_within"  # the default searcher metric picks the best
    assert best["search"]["selected_by"] == metric
    top = table[table["trial_id"] == best["search"]["trial_id"]].iloc[0]
    assert top[metric] == _search_rows(table)[metric].max() and top["cv_rank"] == 1
    # judged on all 4 of its fits: its trial's 2 folds and its rerun's
    runs = table[(table["trial_id"] == top["trial_id"]) | (table["confirms"] == top["trial_id"])]
    fits = runs[["fold0_roc_auc_within", "fold1_roc_auc_within"]].to_numpy().ravel()
    assert best["search"]["runs"] == list(runs["trial_id"]) and best["search"]["fits"] == 4
    assert best["search"][metric] == pytest.approx(fits.mean())
    assert best["search"]["fits_failed"] == 0
    assert best["search"]["cv_macro_f1"] == pytest.approx(top["cv_macro_f1"])
    assert best["pooling"] == top["pooling"] and best["lr"] == pytest.approx(top["lr"])
    assert best["search"]["mlflow_run_id"] == top["mlflow_run_id"]
    assert len(best["search"]["fold_macro_f1"]) == 2 and best["search"]["data_fingerprint"]
    assert best["search"]["fold_roc_auc_within"] == pytest.approx(
        [top["fold0_roc_auc_within"], top["fold1_roc_auc_within"]]
    )
    assert TrainConfig.from_file(run_dir / "best_config.yaml").model == "tiny-random"
    assert f"best config (by {metric}): {metric} {fits.mean():.4f} ± {fits.std():.4f}" in stdout
    assert "over 4 fits (2 run(s) x 2 folds), 0 did not learn" in stdout
    final = tmp / "outputs" / "final"  # train's default place beside the search's folder
    r = run_train("--config", str(run_dir / "best_config.yaml"), "--output", str(final))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["config"]["pooling"] == best["pooling"]
    # The report finds the final run by the search's id and shows its held-out numbers.
    r = subprocess.run(
        [sys.executable, "-m", "nli_tune.report", str(run_dir), "--no-mlflow"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    page = (run_dir / "report.html").read_text()
    assert f"Final models on the {metrics['data']['test_posts']} held-out test posts" in page
    confusions = page.split('class="confusion"')[1:]
    assert len(confusions) == 2  # the fold ensemble's and the refit's
    for table_html in confusions:
        cells = re.findall(r"<td>(\d+)</td>", table_html.split("</table>")[0])
        assert sum(map(int, cells)) == metrics["data"]["test_pairs"]
    rows = [r.split("</td>")[0] for r in page.split('class="final"')[1].split("<tr><td>")[1:]]
    assert rows[:3] == ["fold ensemble (search)", "refit (train)", "TF-IDF + logistic regression"]
    assert f"{metrics['test']['macro_f1']:.3f}" in page
    # The refit tested on exactly the search's held-out posts.
    folds = json.loads((run_dir / "folds.json").read_text())
    splits = json.loads((final / "splits.json").read_text())
    assert sorted(splits["test"]) == sorted(folds["test"])


def test_report_is_written_and_logged_to_the_parent_run(smoke):
    tmp, stdout = smoke
    run_dir = tmp / "outputs" / "smoke"
    page = (run_dir / "report.html").read_text()
    table = read_table(run_dir / "cv_results.csv")
    for tid in table["trial_id"]:
        assert f"<td>{tid}</td>" in page
    assert "report:" in stdout and str(run_dir / "report.html") in stdout
    client, parents, children = _runs(tmp, "smoke")
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"report.html", "report", "epochs.csv", "cv_results.csv"} <= logged
    pngs = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/epochs.png" in pngs and "report/folds.png" in pngs
    # epochs.csv: every trial's per-epoch cross-fold score, as MLflow has it
    epochs = read_table(run_dir / "epochs.csv")
    by_trial = dict(zip(table["trial_id"], table["mlflow_run_id"], strict=True))
    for tid, part in epochs.groupby("trial_id"):
        history = client.get_metric_history(by_trial[tid], "cv_macro_f1")
        assert list(part["epoch"]) == [m.step for m in history]
        assert list(part["cv_macro_f1"]) == pytest.approx([m.value for m in history])
        # and what each epoch cost: its slowest fold's training and scoring
        cost = client.get_metric_history(by_trial[tid], "epoch_compute_s")
        assert list(part["epoch_compute_s"]) == pytest.approx([m.value for m in cost])
        assert (part["epoch_compute_s"] > 0).all()


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of the processes under `pid`."""
    parents, cmds = {}, {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmds[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found |= {c: cmds[c] for c in children}
        todo += children
    return found


def test_mlflow_ui_shows_the_search_and_its_trials(smoke, tmp_path):
    tmp, _ = smoke
    client, parents, children = _runs(tmp, "smoke")
    parent = parents[0]
    exp = parent.info.experiment_id
    table = read_table(tmp / "outputs" / "smoke" / "cv_results.csv")
    metric = "cv_roc_auc_within"  # the searcher's
    # The experiment says it is fine-tuning, a kind MLflow 3.17's UI knows (its JS enum)
    kind = client.get_experiment(exp).tags["mlflow.experimentKind"]
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    assert f'="{kind}"' in next(bundle.glob("main.*.js")).read_text() and kind == "finetuning"
    # The parent carries the search's headline numbers
    headline = {"trials": 2, "trials_stopped": 0, "trials_failed": 0, "confirmation_trials": 1}
    assert {k: parent.data.metrics[k] for k in headline} == headline
    # the exported config's mean over its fits (its trial's folds and its rerun's)
    exported = yaml.safe_load((tmp / "outputs" / "smoke" / "best_config.yaml").read_text())
    best_value = exported["search"][metric]
    assert parent.data.metrics[f"best_{metric}"] == pytest.approx(best_value)
    port = free_port()
    cmd = [sys.executable, "-m", "nli_tune.ui", "--output", str(tmp / "outputs")]
    log = tmp_path / "ui.log"
    with server([*cmd, "--port", str(port)], f"http://127.0.0.1:{port}/health", log, 180):
        line = _wait_for(
            lambda: next((x for x in log.read_text().splitlines() if "MLflow UI: " in x), None),
            60,
            "the UI's URL",
        )
        url = line.split("MLflow UI: ")[1]
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?")
        ui_pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and f"--port\0{port}".encode() in _cmdline(p)
            and b"nli_tune.ui" in _cmdline(p)
        )
        under = _descendants(ui_pid)
        assert any("mlflow" in c for c in under.values()), under  # the server runs under it
        jobs = [c for c in under.values() if "huey" in c or "jobs" in c]
        assert not jobs, under  # MLflow's job consumers are off
        with browser_page() as page:
            page.goto(url)
            page.get_by_text(parent.info.run_name).wait_for(timeout=60_000)
            # the runs table (not the GenAI overview), its columns the search's scores
            headers = page.locator(".ag-header-cell").all_inner_texts()
            assert metric in headers and "cv_macro_f1" in headers, headers
            assert f"best_{metric}" in headers, headers
            cell = 'div.ag-row[row-id="{}"] .ag-cell[col-id="metrics.`{}`"]'
            best = page.locator(cell.format(parent.info.run_id, f"best_{metric}"))
            assert float(best.inner_text()) == pytest.approx(best_value, abs=5e-4)
            # nested runs sit under the parent: its row's expander shows them
            row = page.locator(".ag-row", has_text=parent.info.run_name)
            row.locator("button").first.click()
            for child in children:
                shown = page.locator(cell.format(child.info.run_id, metric))
                shown.wait_for(timeout=30_000)
                mine = table[table["mlflow_run_id"] == child.info.run_id].iloc[0]
                assert float(shown.inner_text()) == pytest.approx(mine[metric])
            text = shoot(page, tmp_path / "mlflow_runs.png")
            assert f"{1 + len(children)} matching runs" in text
            base = url.split("#")[0]
            for child in children:
                page.goto(f"{base}#/experiments/{exp}/runs/{child.info.run_id}")
                page.get_by_text("cv_macro_f1", exact=True).first.wait_for(timeout=60_000)
                # the parent's link renders after the metrics (a placeholder bar until then)
                _wait_for(
                    lambda: f"Parent run\n{parent.info.run_name}" in page.inner_text("body"),
                    60,
                    "the trial page's parent run",
                )
                text = shoot(page, tmp_path / f"mlflow_{child.info.run_id}.png")
                value = child.data.metrics["cv_macro_f1"]
                shown = text.split("cv_macro_f1", 1)[1].split()[0]
                assert float(shown) == pytest.approx(value, abs=1e-3)
                assert f"Parent run\n{parent.info.run_name}" in text
    # Stopping the UI (SIGTERM, as server() does) stops the MLflow server under it too
    _wait_for(lambda: not [p for p in under if Path(f"/proc/{p}").exists()], 30, "no server")


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_optuna_dashboard_lists_every_trial_with_its_value_and_params(smoke, tmp_path):
    """The study in OUTPUT/<name>/optuna.db: one trial per Tune trial, its value the
    searcher's metric as cv_results.csv has it, shown by optuna-dashboard."""
    import optuna

    tmp, stdout = smoke
    run_dir = tmp / "outputs" / "smoke"
    # Optuna saw the search's trials, not the confirmation reruns (not samples of the space)
    table = _search_rows(read_table(run_dir / "cv_results.csv")).set_index("trial_id")
    storage = f"sqlite:///{run_dir / 'optuna.db'}"
    assert f"optuna-dashboard {storage}" in stdout  # the search says where it is
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert study.metric_names == ["cv_roc_auc_within"]
    by_tune = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert sorted(by_tune) == sorted(table.index)
    for tid, trial in by_tune.items():
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == pytest.approx(table.loc[tid, "cv_roc_auc_within"])
        assert trial.params["pooling"] == table.loc[tid, "pooling"]
        assert trial.params["lr"] == pytest.approx(table.loc[tid, "lr"], rel=1e-12)
        assert sorted(trial.intermediate_values) == [1, 2]  # steps are epochs
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "optuna-dashboard"), storage]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, f"http://127.0.0.1:{port}/", tmp_path / "dashboard.log", 120) as url:
        with browser_page() as page:
            numbers = ",".join(str(t.number) for t in study.trials)
            page.goto(f"{url}dashboard/studies/{study._study_id}/trials?numbers={numbers}")
            last = f"Trial {study.trials[-1].number} (trial_id="
            page.get_by_text(last).first.wait_for(timeout=60_000)
            text = shoot(page, tmp_path / "optuna_dashboard.png")
    assert f"{len(study.trials)} Trials" in text
    for trial in study.trials:  # each trial's own block: its value, params, Tune trial id
        block = text.split(f"Trial {trial.number} (trial_id=")[1]
        shown, attrs = block.split("User Attributes")[:2]
        tid = attrs.split("tune_trial_id")[1].split()[0]
        value = float(shown.split("Value")[1].split()[0])
        assert value == pytest.approx(table.loc[tid, "cv_roc_auc_within"], abs=1e-6)
        assert f"pooling {table.loc[tid, 'pooling']}" in shown
        assert f"lr {trial.params['lr']}" in shown


def test_ui_explains_itself_and_refuses_a_folder_without_a_search(tmp_path):
    ui = [sys.executable, "-m", "nli_tune.ui"]
    r = subprocess.run([*ui, "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "127.0.0.1" in text and "job consumers off" in text, text
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "none", tmp_path, tmp_path / "file"):
        r = subprocess.run([*ui, "--output", str(bad)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(f"error: --output {bad}: no search there")
        assert len(r.stderr.strip().splitlines()) == 1


def test_no_post_text_in_search_outputs_or_mlflow(smoke):
    tmp, stdout = smoke
    assert_no_post_text(tmp, SAMPLE_DIR)  # outputs/, ray/ trial folders and mlflow.db


def test_same_seed_gives_the_same_folds_configs_and_fold_metrics(smoke, tmp_path, ray_address):
    """Determinism on CPU: a second run of the smoke search (same space, same seed)."""
    first = smoke[0] / "outputs" / "smoke"
    _search(tmp_path, SPACES_DIR / "smoke.yaml", ray_address, "--quiet")
    second = tmp_path / "outputs" / "smoke"
    assert (first / "folds.json").read_text() == (second / "folds.json").read_text()
    key = ["pooling", "lr"]
    a, b = (read_table(d / "cv_results.csv").sort_values(key) for d in (first, second))
    assert a["pooling"].tolist() == b["pooling"].tolist()
    assert np.allclose(a["lr"], b["lr"], rtol=1e-12)  # Optuna sampled the same configs
    metrics = ["cv_macro_f1", "cv_roc_auc", "fold0_macro_f1", "fold1_macro_f1"]
    assert np.allclose(a[metrics], b[metrics], atol=1e-6), (a[metrics], b[metrics])
    ea, eb = (read_table(d / "epochs.csv") for d in (first, second))
    assert np.allclose(sorted(ea["cv_roc_auc"]), sorted(eb["cv_roc_auc"]), atol=1e-6)


def test_dashboard_answers_with_token(smoke):
    _, stdout = smoke
    line = next(ln for ln in stdout.splitlines() if ln.startswith("Ray dashboard: http://"))
    url = line.split()[2] + "/api/version"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url, timeout=10)
    assert denied.value.code == 401  # token authentication stays on
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and "ray_version" in json.loads(resp.read())


def _wait_for(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (value := check()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def test_ray_dashboard_lists_the_running_trial(tmp_path, ray_address):
    space = _space(tmp_path, "dash", num_samples=1, fixed=SMOKE["fixed"] | {"epochs": 3})
    log = tmp_path / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _search_cmd(tmp_path, space, ray_address), cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        line = _wait_for(
            lambda: next(
                (x for x in log.read_text().splitlines() if x.startswith("Ray dashboard: http")),
                None,
            ),
            300,
            "the dashboard line",
        )
        url = line.split()[2]
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()

        def trial_alive() -> bool:
            req = urllib.request.Request(
                url + "/api/v0/actors?detail=1&limit=1000",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                actors = json.loads(resp.read())["data"]["result"]["result"]
            return any(a["class_name"] == "ImplicitFunc" and a["state"] == "ALIVE" for a in actors)

        _wait_for(trial_alive, 300, "the trial's actor")
        with browser_page() as page:
            # The browser way in: the token as the dashboard's login cookie.
            page.context.add_cookies(
                [{"name": "ray-authentication-token", "value": token, "url": url}]
            )
            page.goto(url + "/#/actors")
            page.get_by_label("repr").fill("run_trial")  # the trial's Tune actor
            page.get_by_text("ImplicitFunc").first.wait_for(timeout=60_000)
            text = shoot(page, tmp_path / "ray_actors.png")
            assert "run_trial" in text
            page.goto(url + "/#/jobs")
            page.get_by_text("nli_tune.search", exact=False).first.wait_for(timeout=60_000)
            shoot(page, tmp_path / "ray_jobs.png")
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def _learner_then_loser(tmp: Path, name: str, num_samples: int, epochs: int) -> Path:
    """ASHA space whose first trial learns (lr 5e-3) and whose second cannot move its
    zero-initialised head (lr 1e-12): it predicts "matched" everywhere (macro-F1 ~0.09) and
    must be cut at the first rung. Any further trials are sampled."""
    return _space(
        tmp,
        name,
        scheduler="asha",
        num_samples=num_samples,
        points_to_evaluate=[{"lr": 5.0e-3, "pooling": "mean"}, {"lr": 1.0e-12, "pooling": "mean"}],
        asha={"grace_period": 1, "reduction_factor": 2},
        fixed=SMOKE["fixed"] | {"epochs": epochs, "patience": 0},  # no fold stops on its own
        # The loser's constant scores tie (ROC-AUC 0.5) with a random tiny model's; its
        # all-"matched" macro-F1 (~0.09) sets it apart.
        metric="cv_macro_f1",
    )


def _placement_groups() -> dict[str, tuple[str, int]]:
    """Every placement group the session cluster knows, removed ones included:
    id -> (state, number of bundles)."""
    import ray
    from ray.util.state import list_placement_groups

    ray.init(address="auto", logging_level="ERROR")
    try:
        groups = list_placement_groups(detail=True, limit=10_000)
        return {pg.placement_group_id: (pg.state, len(pg.bundles)) for pg in groups}
    finally:
        ray.shutdown()


def test_asha_stops_the_trial_built_to_lose_and_folds_score_only_at_rungs(tmp_path, ray_address):
    """5 epochs, ASHA grace 1 and factor 2: Ray's rungs are epochs 1, 2 and 4. The loser is
    cut at epoch 1; the learner's workers score (and Tune, MLflow and epochs.csv see) epochs
    1, 2, 4 and 5 only, though epoch 3 trains (its compute arrives with epoch 4)."""
    space = _learner_then_loser(tmp_path, "asha", num_samples=2, epochs=5)
    before = _placement_groups()
    _search(tmp_path, space, ray_address)
    made = [v for k, v in _placement_groups().items() if k not in before]
    # Every group the search made is gone, and exactly one worker group (2 folds: 2 bundles)
    # per trial: freed under a live Train controller, a group is replaced by a new one,
    # which Ray can keep reserved after the search ended (seen: later searches starved).
    assert {state for state, _ in made} == {"REMOVED"}, made
    assert sum(bundles == 2 for _, bundles in made) == 2, made
    run_dir = tmp_path / "outputs" / "asha"
    table = read_table(run_dir / "cv_results.csv")
    bad = table[table["lr"] < 1e-9].iloc[0]
    good = table[table["lr"] > 1e-9].iloc[0]
    assert good["status"] == "completed" and good["epochs"] == 5
    assert bad["status"] == "stopped early" and bad["epochs"] == 1
    assert bad["cv_macro_f1"] < 0.2 < good["cv_macro_f1"]
    # The exported trial ran all its epochs (study/selection.py: a stopped one never competes)
    exported = yaml.safe_load((run_dir / "best_config.yaml").read_text())["search"]
    assert exported["trial_id"] == good["trial_id"] and exported["epochs_run"] == 5
    epochs = read_table(run_dir / "epochs.csv")
    assert list(epochs[epochs["trial_id"] == good["trial_id"]]["epoch"]) == [1, 2, 4, 5]
    client, (parent,), children = _runs(tmp_path, "asha")
    assert parent.data.params["scored_epochs"] == "1,2,4"
    run = next(c for c in children if c.info.run_id == bad["mlflow_run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "cv_macro_f1")] == [1]
    assert run.data.tags["status"] == "stopped early"
    rid = good["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(rid, "cv_macro_f1")] == [1, 2, 4, 5]
    for k in range(2):  # each scored epoch scores the calibration and validation posts
        passes = [m.value for m in client.get_metric_history(rid, f"fold{k}_score_passes")]
        assert passes == [2.0, 4.0, 6.0, 8.0]


def test_search_without_dashboard_frees_each_trials_workers(tmp_path, ray_address):
    """Ray Train frees a finished worker group only through the state API, which needs
    the dashboard. With --no-dashboard the search frees them itself; otherwise the trial
    after a completed or ASHA-stopped one cannot start its workers and fails on the
    start-up timeout (shortened here to 30 s). One trial fits at a time (1.25 of 2 CPUs)."""
    space = _learner_then_loser(tmp_path, "nodash", num_samples=3, epochs=2)
    cmd = _search_cmd(tmp_path, space, "", "--no-dashboard")
    cmd.remove("--address")
    cmd.remove("")  # no address: the search starts its own local Ray, without a dashboard
    env = os.environ | {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30"}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "Ray dashboard: off" in r.stdout
    table = read_table(tmp_path / "outputs" / "nodash" / "cv_results.csv")
    assert len(table) == 3 and "failed" not in set(table["status"])
    assert (table["status"] == "stopped early").sum() == 1  # the lr 1e-12 trial, at rung 1


SWEEP_IN_ANOTHER_JOB = """
import ray
from ray.util.placement_group import placement_group, placement_group_table
from nli_tune.tuning.driver_callbacks import sweep_orphan_placement_groups
ray.init(address="auto", logging_level="ERROR")
own = placement_group([{"CPU": 0.01}])
ray.get(own.ready())
sweep_orphan_placement_groups()
print("own", placement_group_table(own)["state"])
"""


def test_end_of_search_sweep_keeps_other_jobs_placement_groups(ray_address):
    """The end-of-search sweep frees this search's leftover groups, never another job's
    (e.g. a second search sharing a `ray up` cluster)."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    ray.init(address=ray_address, logging_level="ERROR")
    try:
        other = placement_group([{"CPU": 0.01}])
        ray.get(other.ready(), timeout=60)
        r = subprocess.run(
            [sys.executable, "-c", SWEEP_IN_ANOTHER_JOB],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert "own REMOVED" in r.stdout
        assert placement_group_table(other)["state"] == "CREATED"
    finally:
        ray.shutdown()


def test_ctrl_c_during_the_last_trial_exports_nothing(tmp_path, ray_address):
    """Tune's clean-up after Ctrl-C marks the running trial TERMINATED; the search must
    still count it unfinished, not export its half-trained scores as a result."""
    params = SMOKE["params"] | {"epochs": {"choice": [1, 60]}}
    first = {"pooling": "mean", "lr": 1e-3}
    points = [first | {"epochs": 1}, first | {"epochs": 60}]  # trial 2 is still running
    fixed = _without_epochs(SMOKE["fixed"]) | {"patience": 0}  # every epoch computes
    space = _space(tmp_path, "cut", params=params, fixed=fixed, points_to_evaluate=points)
    proc = _search(tmp_path, space, ray_address, wait=False)
    exp_dir = tmp_path / "outputs" / "cut" / "ray" / "cut"
    # Ctrl-C once trial 2 has reported an epoch too.
    _interrupt_when(proc, exp_dir, lambda epochs: sum(n >= 1 for n in epochs) == 2)
    run_dir = tmp_path / "outputs" / "cut"
    assert not (run_dir / "cv_results.csv").exists() and not (run_dir / "best_config.yaml").exists()
    _, parents, children = _runs(tmp_path, "cut")
    assert parents[0].info.status == "RUNNING"  # --resume continues it
    statuses = sorted((c.data.params["epochs"], c.info.status) for c in children)
    assert statuses == [("1", "FINISHED"), ("60", "RUNNING")]

    # A resume must be the same search: another fold count is refused before anything runs.
    saved = (run_dir / "search.json").read_text()
    r = subprocess.run(
        [*_search_cmd(tmp_path, space, ray_address), "--resume", "--folds", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--resume: folds is 3 now but was 2" in r.stderr
    assert (run_dir / "search.json").read_text() == saved


def test_storage_flag_puts_tune_and_train_state_where_all_nodes_reach_it(tmp_path, ray_address):
    """Multi-node Ray Train refuses local checkpoint paths, so a cluster search passes a
    shared --storage (s3:// or NFS); here a second local folder stands in for it."""
    shared = tmp_path / "shared"
    shared.mkdir()  # a shared mount exists before the search; a missing one is an error
    space = _space(tmp_path, "store", num_samples=1)
    out = _search(tmp_path, space, ray_address, "--storage", str(shared), "--quiet")
    assert not re.search(r"\] \w+ (start|epoch|completed)", out)  # --quiet: no progress
    assert "best config (by cv_roc_auc_within)" in out  # but the result itself
    run_dir = tmp_path / "outputs" / "store"
    assert (run_dir / "cv_results.csv").exists() and not (run_dir / "ray").exists()
    assert len(list((shared / "store").glob("*/result.json"))) == 1  # the Tune trial
    assert list((shared / "train").glob("trial_*/epoch_*/fold*/trainer_state.json"))  # folds
    again = subprocess.run(
        [*_search_cmd(tmp_path, space, ray_address), "--storage", str(shared)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "pass --resume to continue it" in again.stderr


@pytest.mark.parametrize("trouble", ["output under a file", "read-only output", "no storage"])
def test_disk_trouble_exits_2_before_ray_starts_and_writes_nothing(tmp_path, trouble):
    (tmp_path / "a_file").write_text("x")
    space = _space(tmp_path, "disk", num_samples=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    if trouble == "output under a file":
        flags, message = ["--output", str(tmp_path / "a_file" / "out")], "is a file, not a folder"
    elif trouble == "read-only output":
        if os.geteuid() == 0:  # root writes through permission bits: use a read-only fs
            target = Path("/proc/nli-tune-out")
        else:
            target = tmp_path / "ro" / "out"
            target.parent.mkdir()
            target.parent.chmod(0o555)
            before.append("ro")
        flags, message = ["--output", str(target)], "cannot write in"
    else:
        flags, message = ["--storage", str(tmp_path / "missing")], "no such folder"
    cmd = [sys.executable, "-m", "nli_tune.search", "--space", str(space), *flags]
    cmd += ["--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Ray" not in r.stdout and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no outputs, no mlflow.db


def test_fresh_searches_get_their_own_id_and_a_resume_must_match(tmp_path):
    from nli_tune.core.errors import UserError
    from nli_tune.study.run_files import resolve_search_id, save_search_id
    from nli_tune.study.space import load_space

    space = load_space(str(_space(tmp_path, "ids")))
    first, identity = resolve_search_id(space, "f" * 64, tmp_path, resume=False)
    second, _ = resolve_search_id(space, "f" * 64, tmp_path, resume=False)
    assert first != second  # so a second search never reopens the first's MLflow runs
    with pytest.raises(UserError, match="search.json is missing"):
        resolve_search_id(space, "f" * 64, tmp_path, resume=True)
    save_search_id(tmp_path, first, identity, "sqlite:////x/mlflow.db")
    assert resolve_search_id(space, "f" * 64, tmp_path, resume=True)[0] == first
    with pytest.raises(UserError, match="data_fingerprint is"):
        resolve_search_id(space, "e" * 64, tmp_path, resume=True)
    space.fixed["lr"] = 0.1
    with pytest.raises(UserError, match="fixed is"):
        resolve_search_id(space, "f" * 64, tmp_path, resume=True)


@pytest.mark.parametrize(
    "folds, share, gpus, fit",
    [(4, 0.4, 2, 1), (5, 0.4, 2, 0), (3, 0.5, 2, 1), (2, 0.5, 2, 2), (2, 1, 8, 4), (2, 2, 8, 2)],
)
def test_concurrency_packs_fractional_gpus_per_gpu(folds, share, gpus, fit):
    from nli_tune.core.errors import UserError
    from nli_tune.study.space import SearchSpace
    from nli_tune.tuning.tuner import concurrency

    space = SearchSpace("g", 8, folds, "asha", {}, {}, cpus_per_worker=1, gpus_per_worker=share)
    if fit == 0:  # 5 x 0.4: 2 fit on each GPU, so 2 GPUs hold 4 of the 5 workers
        with pytest.raises(UserError, match="one trial needs"):
            concurrency(space, {"CPU": 64, "GPU": gpus})
    else:
        assert concurrency(space, {"CPU": 64, "GPU": gpus}) == fit


def test_resume_without_a_search_and_rerun_without_resume_are_user_errors(smoke, tmp_path):
    tmp, _ = smoke
    cmd = [
        sys.executable,
        "-m",
        "nli_tune.search",
        "--space",
        str(SPACES_DIR / "smoke.yaml"),  # the space the smoke fixture ran
        "--output",
        str(tmp / "outputs"),
    ]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "pass --resume to continue it" in again.stderr
    fresh = subprocess.run(
        [*cmd[:-1], str(tmp_path / "none"), "--resume"], capture_output=True, text=True, timeout=120
    )
    assert fresh.returncode == 2 and "no search to resume" in fresh.stderr
    assert not (tmp_path / "none").exists()


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    workers = [
        t for name, t in config["available_node_types"].items() if name != config["head_node_type"]
    ]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert config["available_node_types"][config["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any("pip install" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", ["gpu", "full"])
def test_gpu_spaces_fill_the_cluster_yaml_from_its_start(name):
    """The search sizes its concurrency from the resources present when it starts, so the
    launcher's starting cluster must fit the GPU spaces, GPUs all used."""
    from nli_tune.study.space import load_space
    from nli_tune.tuning.tuner import concurrency

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "cluster.yaml").read_text())
    totals: dict[str, float] = {}
    for node_name, node in raw["available_node_types"].items():
        count = 1 if node_name == raw["head_node_type"] else node["min_workers"]
        for key, value in node["resources"].items():
            totals[key] = totals.get(key, 0) + count * value
    space = load_space(name)
    trials = concurrency(space, totals)
    assert trials * space.folds * space.gpus_per_worker == totals["GPU"] == 16


def test_searched_rank_and_epochs_keep_their_meaning(tmp_path, ray_address):
    """A searched DoRA rank stays apart from cv_rank, and a trial that runs all of its own
    (searched) epochs is "completed", even when another trial runs more."""
    params = SMOKE["params"] | {"rank": {"choice": [4, 8]}, "epochs": {"choice": [1, 2]}}
    points = [
        {"pooling": "mean", "lr": 1e-3, "rank": 4, "epochs": 1},
        {"pooling": "attention", "lr": 2e-3, "rank": 8, "epochs": 2},
    ]
    fixed = _without_epochs(SMOKE["fixed"])
    space = _space(
        tmp_path, "ranks", params=params, fixed=fixed, num_samples=2, points_to_evaluate=points
    )
    _search(tmp_path, space, ray_address)
    table = read_table(tmp_path / "outputs" / "ranks" / "cv_results.csv")
    assert set(table["rank"]) == {4, 8} and sorted(table["cv_rank"]) == [1, 2]
    assert sorted(table["epochs"]) == [1, 2] and set(table["status"]) == {"completed"}
    _, _, children = _runs(tmp_path, "ranks")
    assert {c.data.tags["status"] for c in children} == {"completed"}


def test_trial_too_big_for_the_cluster_fails_at_once_and_writes_nothing(tmp_path, ray_address):
    space = _space(tmp_path, "huge", resources={"cpus_per_worker": 8, "driver_cpus": 0.25})
    cmd = _search_cmd(tmp_path, space, ray_address)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "one trial needs 16.25 CPUs" in r.stderr and "cluster has 2 CPUs" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]


def test_aggregate_skips_folds_without_an_auc():
    from nli_tune.tuning.trial import FOLD_METRICS, cross_fold_mean

    def report(fold, f1, auc):
        return {n: 0.0 for n in FOLD_METRICS} | {
            "fold": fold,
            "epoch": 2,
            "stopped_early": fold == 2,
            "val_macro_f1": f1,
            "val_roc_auc": auc,
            "peak_rss_mb": 900.0,  # every worker report carries it (fold_worker.report)
        }

    # Reports arrive in any order; fold 1's validation split had one class (AUC NaN).
    out = cross_fold_mean([report(2, 0.6, 0.9), report(0, 0.4, 0.7), report(1, 0.5, float("nan"))])
    assert out["epoch"] == 2 and out["folds_stopped"] == 1
    assert out["cv_macro_f1"] == pytest.approx(0.5)
    assert out["cv_macro_f1_std"] == pytest.approx(np.std([0.4, 0.5, 0.6]))
    assert out["cv_roc_auc"] == pytest.approx(0.8)
    assert [out[f"fold{k}_macro_f1"] for k in range(3)] == [0.4, 0.5, 0.6]


def test_unusable_mlflow_uri_is_a_user_error_and_writes_nothing(tmp_path, ray_address):
    cmd = _search_cmd(tmp_path, _space(tmp_path, "nodb"), ray_address)
    # No PostgreSQL driver is installed, so MLflow fails on this one at once.
    cmd[cmd.index("--mlflow-uri") + 1] = "postgresql://nobody@127.0.0.1:9/mlflow"
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]  # above it only Ray's own connection warning
    assert last.startswith("error: --mlflow-uri postgresql://") and "MLflow cannot use it" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodb.yaml"]


def test_workers_get_the_search_env_the_users_values_and_local_only_settings():
    """Ray's runtime_env replaces a variable in every trial and worker: what the user set
    must win, NLI_TUNE_* must pass, and the preemption watcher is off only where the search
    starts its own Ray (a cluster's nodes can be preempted)."""
    from nli_tune.search import RAY_ENV, worker_env

    user = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600", "NLI_TUNE_X": "1", "HOME": "/h"}
    local = worker_env(None, user)
    assert local["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "600"
    assert local["NLI_TUNE_X"] == "1" and "HOME" not in local
    assert local["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert local["TOKENIZERS_PARALLELISM"] == RAY_ENV["TOKENIZERS_PARALLELISM"]
    cluster = worker_env("ray://head:10001", user)
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in cluster
    assert cluster == {k: v for k, v in local.items() if k != "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"}
    watched = worker_env(None, {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"})
    assert watched["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"  # the user's choice wins
