"""Build a search's report page (report.html, its plots) from the files the search and
`train` wrote, and log it to the search's MLflow parent run. `python -m nli_tune.report`
is the command; what the page shows is said there."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nli_tune.core.errors import UserError
from nli_tune.core.outputs import atomic_dir
from nli_tune.evaluation.baselines import TFIDF
from nli_tune.reporting.fidelity import IMPORTANCE_MIN_TRIALS, importance_epoch, values_at_epoch
from nli_tune.reporting.page import ENSEMBLE, REFIT, render
from nli_tune.reporting.plots import (
    criterion_f1_plot,
    epoch_curves_plot,
    fold_spread_plot,
    optuna_plots,
    rebuild_study,
)
from nli_tune.reporting.search_files import SearchFiles, load_search, ranked, reference_rows
from nli_tune.study.run_files import ENSEMBLE_DIR

REPORT_FILE = "report.html"
PLOTS_DIR = "report"


def find_final(files: SearchFiles, final: str | None) -> Path | None:
    """The `train` output for this search's best config: --final, or a folder in (or
    named) outputs/final or <run>/final whose metrics.json names this search's best
    trial, the newest first."""
    if final is not None:
        path = Path(final)
        if not (path / "metrics.json").is_file():
            raise UserError(f"--final {path}: no metrics.json (pass the folder train wrote)")
        return path
    roots = (files.run_dir / "final", files.run_dir.parent / "final")
    # train's own folders under them too (outputs/final/<model>-<time>), the newest first
    found = [p for root in roots for p in sorted(root.glob("*/"), reverse=True)]
    for path in (*roots, *found):
        metrics = path / "metrics.json"
        if metrics.is_file():
            search = json.loads(metrics.read_text()).get("search") or {}
            same = search.get("trial_id") == files.search.get("trial_id")
            if same and search.get("mlflow_parent_run_id") == files.search.get(
                "mlflow_parent_run_id"
            ):
                return path
    return None


def final_section(path: Path) -> dict:
    """Held-out test numbers of the final model, its confusion matrix and threshold."""
    metrics = json.loads((path / "metrics.json").read_text())
    preds = pd.read_csv(path / "predictions.csv")
    y, d = preds["label"].to_numpy(), preds["decision"].to_numpy()
    confusion = [[int(((y == a) & (d == b)).sum()) for b in (0, 1)] for a in (0, 1)]
    test = metrics["test"]
    per_criterion = _per_criterion(test)
    return {
        "path": str(path),
        "test": test,
        "tfidf": metrics["baselines"]["tfidf_logreg"],
        "majority": metrics["baselines"]["majority"],
        "difference": metrics["model_minus_tfidf"],
        "confusion": confusion,
        "per_criterion": per_criterion,
        "tfidf_per_criterion": _per_criterion(metrics["baselines"]["tfidf_logreg"]),
        "threshold": metrics["calibration"]["threshold"],
        "how": metrics["calibration"].get("how", metrics["calibration"]["method"]),
        "test_posts": metrics["data"]["test_posts"],
    }


def _per_criterion(row: dict) -> dict[str, float]:
    return {k[3:]: v for k, v in row.items() if k.startswith("f1_") and k != "f1_matched"}


def build_report(run_dir: str | Path, final: str | None = None, log_mlflow: bool = True) -> Path:
    """Write report.html and the PNGs into the run folder; return the page's path."""
    files = load_search(run_dir)
    final_dir = find_final(files, final)
    table = ranked(files)
    refs = reference_rows(files)
    finals = []  # the trained models with test scores: the fold ensemble, the refit
    if (files.run_dir / ENSEMBLE_DIR / "metrics.json").is_file():
        finals.append((ENSEMBLE, final_section(files.run_dir / ENSEMBLE_DIR)))
    if final_dir is not None:
        finals.append((REFIT, final_section(final_dir)))
    plots_dir = files.run_dir / PLOTS_DIR
    with atomic_dir(plots_dir) as tmp:
        images: dict[str, Path] = {}
        captions: dict[str, str] = {}
        if len(table):
            images["fold scores per trial"] = fold_spread_plot(table, files.k, tmp / "folds.png")
            images["cv macro-F1 per epoch"] = epoch_curves_plot(
                files.epochs, files.results, tmp / "epochs.png"
            )
            found = importance_epoch(files.epochs, files.metric)
            if found is not None:  # importance over trials at one epoch, not mixed ones
                epoch, n = found
                values = values_at_epoch(files.epochs, epoch, files.metric)
                study = rebuild_study(files.results, files.space, values)
                for name, path in optuna_plots(study, tmp).items():
                    images[f"hyper-parameter {name}"] = path
                    captions[f"hyper-parameter {name}"] = (
                        f"{files.metric} of the {n} trials that scored epoch {epoch} (the "
                        f"deepest epoch with at least {IMPORTANCE_MIN_TRIALS} trials, else "
                        f"the one with most), each at that epoch"
                    )
            crit = {c[6:]: float(table.iloc[0][c]) for c in table if c.startswith("cv_f1_")}
            if crit:  # beside TF-IDF's on the same folds, under the same threshold rule
                tfidf = refs.set_index("setup").loc[TFIDF, "cv_f1"]
                images["per-criterion F1 of the best trial and TF-IDF"] = criterion_f1_plot(
                    crit,
                    "F1 per criterion, mean over the search's folds",
                    tmp / "criteria.png",
                    beside={"best trial": crit, "TF-IDF + logistic regression": tfidf},
                )
        for i, (name, final_data) in enumerate(finals):
            images[f"per-criterion F1 of the {name}"] = criterion_f1_plot(
                final_data["per_criterion"],
                f"{name}: test F1 per criterion, beside TF-IDF on the same posts",
                tmp / f"final_criteria{i}.png",
                beside={
                    name: final_data["per_criterion"],
                    "TF-IDF + logistic regression": final_data["tfidf_per_criterion"],
                },
            )
        page = render(files, refs, finals, images, captions)
    out = files.run_dir / REPORT_FILE
    tmp_page = out.with_name(f".{REPORT_FILE}.tmp")
    # Images are embedded from the temp folder's copies; the folder is now in place.
    tmp_page.write_text(page, encoding="utf-8")
    tmp_page.replace(out)
    if log_mlflow:
        log_to_mlflow(files, out)
    return out


def log_to_mlflow(files: SearchFiles, page: Path) -> None:
    """Attach the page and the PNGs to the search's parent MLflow run."""
    uri, run_id = files.search.get("mlflow_uri"), files.search.get("mlflow_parent_run_id")
    if not uri or not run_id:
        print("note: best_config.yaml names no MLflow run: the report was not logged")
        return
    from nli_tune.tracking.runs import mlflow_client

    client = mlflow_client(uri)
    client.log_artifact(run_id, str(page))
    client.log_artifacts(run_id, str(files.run_dir / PLOTS_DIR), artifact_path=PLOTS_DIR)
