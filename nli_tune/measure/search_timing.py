"""The bench's search figures: one real search, run as a user runs it, timed from outside.

The bench runs the README's main job (`search_spaces/pooling.yaml`) cut to fit its time:
4 trials of at most 3 epochs with the space's ASHA (`--quick`: 1 trial of 1 epoch, no
ASHA; `--main-job`: the job as shipped). Each trial's wall time, its
folds' compute time (training and scoring, the slowest fold per epoch) and the rest, its
overhead, come from the search's own cv_results.csv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from nli_tune import SPACES_DIR
from nli_tune.core.outputs import read_table
from nli_tune.study.run_files import ENSEMBLE_DIR
from nli_tune.study.selection import SEARCH, with_stages
from nli_tune.study.space import DEFAULT_METRIC, METRICS, load_space

MAIN_JOB_SPACE = SPACES_DIR / "pooling.yaml"
METRIC_COLUMNS = (*METRICS, "compute_s")
CUTS = {  # bench mode -> what it changes in the main job's space (None: nothing)
    "default": {"num_samples": 4, "fixed": {"epochs": 3}},
    # One trial: --quick must end within 5 min in all (3.5 min here; 2 trials took 5).
    "quick": {"num_samples": 1, "scheduler": "none", "fixed": {"epochs": 1}},
    "main-job": None,
}


def run_search(space_file: Path, workdir: Path, overrides: dict | None = None) -> dict:
    """Run `python -m nli_tune.search --space SPACE` in `workdir` (its outputs, Ray storage
    and MLflow stay there) and return its timing figures."""
    space = yaml.safe_load(space_file.read_text())
    for key, value in (overrides or {}).items():
        space[key] = space.get(key, {}) | value if isinstance(value, dict) else value
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    cmd = [sys.executable, "-m", "nli_tune.search", "--space", str(path), "--no-report"]
    print(f"search: {' '.join(cmd[1:])}  ({space['num_samples']} trial(s); minutes)", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError("the bench search failed:\n" + "\n".join(tail))
    found = re.search(r"-> (\d+) trial\(s\) at a time", done.stdout)
    at_once = int(found.group(1)) if found else 1
    run_dir = workdir / "outputs" / space["name"]
    every = with_stages(read_table(run_dir / "cv_results.csv"))
    table = every[every["stage"] == SEARCH]  # the confirmation reruns are counted apart
    max_epochs = int(space["fixed"]["epochs"])
    metric = load_space(str(path)).searcher_metric
    figures = search_timing(table, wall, at_once, max_epochs, metric)
    figures["search_overhead_fraction"] = 1 - every["compute_s"].sum() / at_once / wall
    figures |= exported_figures(run_dir, metric, len(every) - len(table))
    epochs = read_table(run_dir / "epochs.csv")
    figures["fold_parallel_epoch_s"] = first_point_epoch_s(
        table, epochs, space["points_to_evaluate"][0]
    )
    # Each trial as cv_results.csv has it (ids, params, scores, status; never text), so the
    # README can quote a run the bench recorded.
    keep = ["trial_id", *space["params"], *METRIC_COLUMNS, "epochs", "status"]
    figures["trials_table"] = table[[c for c in keep if c in table]].to_dict("records")
    figures["run_dir"] = str(run_dir)  # for the figures read from its files after
    return figures


def exported_figures(run_dir: Path, metric: str, confirmation_trials: int) -> dict:
    """What the search exported (its mean over the config's fits, its fits and failures)
    and its fold ensemble's test scores beside TF-IDF's on the same held-out posts."""
    search = yaml.safe_load((run_dir / "best_config.yaml").read_text())["search"]
    out = {
        "confirmation_trials": confirmation_trials,
        "exported_trial": search["trial_id"],
        "exported_metric": search[metric],
        "exported_fits": search["fits"],
        "exported_fits_failed": search["fits_failed"],
    }
    ensemble = run_dir / ENSEMBLE_DIR / "metrics.json"
    if ensemble.is_file():
        m = json.loads(ensemble.read_text())
        out |= {
            "ensemble_test_macro_f1": m["test"]["macro_f1"],
            "ensemble_test_roc_auc_within": m["test"]["roc_auc_within"],
            "ensemble_test_criterion_macro_f1": m["test"]["criterion_macro_f1"],
            "ensemble_tfidf_macro_f1": m["baselines"]["tfidf_logreg"]["macro_f1"],
            "ensemble_minus_tfidf_ci95": m["model_minus_tfidf"]["ci95"],
            "ensemble_test_posts": m["data"]["test_posts"],
        }
    return out


def first_point_epoch_s(table: pd.DataFrame, epochs: pd.DataFrame, point: dict) -> float:
    """Epoch 1's compute seconds, its slowest fold's (the K folds ran side by side), of the
    trial that ran the space's first fixed point: the bench times the same folds alone."""
    match = np.logical_and.reduce([table[key] == value for key, value in point.items()])
    trial = table.loc[match, "trial_id"].iloc[0]
    first = epochs[(epochs["trial_id"] == trial) & (epochs["epoch"] == 1)]
    return float(first["epoch_compute_s"].iloc[0]) if len(first) else float("nan")  # failed


def search_timing(
    table: pd.DataFrame, wall_s: float, at_once: int, max_epochs: int, metric: str = DEFAULT_METRIC
) -> dict:
    """Timing figures of one search from its cv_results.csv and its wall time.

    search_overhead_fraction: 1 - (sum of the trials' fold compute / trials at a time) /
    wall, the share of the search's time in which its trial slots compute nothing.
    asha_epoch_savings: 1 - epochs run / (trials x max epochs), the epochs the scheduler
    did not run; asha_comparison replaces it with a run of the search without ASHA.
    best_metric / best_cv_roc_auc: the best trial by `metric` (the searcher's, which picks
    the exported config) and that trial's cv ROC-AUC.
    """
    best = table.loc[table[metric].idxmax()]
    return {
        "search_s": wall_s,
        "per_trial_overhead_s": float(table["overhead_s"].median()),
        "per_trial_compute_s": float(table["compute_s"].median()),
        "search_overhead_fraction": 1 - table["compute_s"].sum() / at_once / wall_s,
        "asha_epoch_savings": 1 - table["epochs"].sum() / (len(table) * max_epochs),
        "epochs_run": int(table["epochs"].sum()),
        "no_asha_epochs_run": len(table) * max_epochs,  # patience 0: every trial runs them all
        "best_cv_macro_f1": float(table["cv_macro_f1"].max()),
        "best_metric": float(best[metric]),
        "best_cv_roc_auc": float(best["cv_roc_auc"]),
        "peak_rss_mb_per_worker": float(table["worker_peak_rss_mb"].max()),
        "tokens_per_s_per_worker": float(table["worker_tokens_per_s"].median()),
        "trials": len(table),
        "trials_at_once": at_once,
    }


def asha_comparison(with_asha: dict, without: dict) -> dict:
    """The same seeded search with ASHA and without (its first trials sample the same
    configs: TPE starts with seeded random draws): the epochs ASHA did not run, and what
    its best trial lost against the best of running every trial out, on the searcher's
    metric (the one that picks the exported config)."""
    return {
        "asha_epoch_savings": 1 - with_asha["epochs_run"] / without["epochs_run"],
        "no_asha_epochs_run": without["epochs_run"],
        "no_asha_best_cv_macro_f1": without["best_cv_macro_f1"],
        "no_asha_best_metric": without["best_metric"],
        "asha_best_loss": without["best_metric"] - with_asha["best_metric"],
    }
