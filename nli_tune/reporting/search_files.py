"""What a finished search wrote, read back, and the comparisons the report makes of it:
the trials ranked, the best against the next ones (Nadeau and Bengio's corrected resampled
t-test: CV folds share training posts, so a plain paired t-test is over-confident), and
the reference rows (majority class, TF-IDF + one logistic regression per criterion)
computed on the search's own folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nli_tune.core.config import TrainConfig, read_mapping
from nli_tune.core.errors import UserError
from nli_tune.core.outputs import read_table
from nli_tune.evaluation.baselines import MAJORITY, TFIDF, baseline_metrics, posts_frame
from nli_tune.evaluation.metrics import corrected_ttest
from nli_tune.reporting.fidelity import common_epoch, fold_columns, fold_values_at
from nli_tune.study.selection import SEARCH, fit_values, rank_configs, with_stages
from nli_tune.study.space import SearchSpace, fold_column, load_space

TOP = 5  # the best trial is compared with each other trial of the top TOP
ABLATION_KEYS = ("unit", "attention", "pairing", "hypothesis")  # design switches side by side


@dataclass
class SearchFiles:
    run_dir: Path
    results: pd.DataFrame  # cv_results.csv: one row per trial, ranked
    epochs: pd.DataFrame  # epochs.csv: per trial and epoch, the cross-fold numbers
    folds: dict  # folds.json: test posts and each fold's validation posts
    space: SearchSpace
    best: TrainConfig  # best_config.yaml
    search: dict  # best_config.yaml's search metadata

    @property
    def k(self) -> int:
        return len(self.folds["folds"])

    @property
    def metric(self) -> str:
        """What the search ranked trials by (searches before `metric:` used macro-F1)."""
        return str(self.search.get("selected_by", "cv_macro_f1"))

    def fold_scores(self, row: pd.Series, metric: str | None = None) -> np.ndarray:
        metric = metric or self.metric
        return np.array([row[fold_column(metric, i)] for i in range(self.k)], dtype=float)


def load_search(run_dir: str | Path) -> SearchFiles:
    root = Path(run_dir)
    need = ("cv_results.csv", "epochs.csv", "folds.json", "space.yaml", "best_config.yaml")
    for name in need:
        if not (root / name).is_file():
            raise UserError(
                f"{root}: no {name}; pass the folder a finished `python -m nli_tune.search` "
                f"wrote (outputs/<name>)"
            )
    raw = read_mapping(root / "best_config.yaml")
    return SearchFiles(
        run_dir=root,
        results=read_table(root / "cv_results.csv"),
        epochs=read_table(root / "epochs.csv"),
        folds=json.loads((root / "folds.json").read_text()),
        space=load_space(str(root / "space.yaml")),
        best=TrainConfig.from_dict(raw, source=str(root / "best_config.yaml")),
        search=raw.get("search") or {},
    )


def search_trials(files: SearchFiles) -> pd.DataFrame:
    """The search's own trials (cv_results.csv also holds the confirmation reruns)."""
    table = with_stages(files.results)
    return table[table["stage"] == SEARCH]


def ranked(files: SearchFiles) -> pd.DataFrame:
    """Search trials with a score, best first by the search's metric at their last scored
    epoch (which differs between trials ASHA stopped and trials that ran on)."""
    scored = search_trials(files).dropna(subset=[files.metric])
    return scored.sort_values(files.metric, ascending=False, kind="stable")


def confirmed(files: SearchFiles) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(configs ranked as the export chose among them, every fit of the top TOP of them):
    the mean of the search's metric over each config's seeds x folds and its failed fits
    (study/selection.py), and each fit's fold, seed, value and verdict."""
    table = with_stages(files.results)
    configs = rank_configs(table, files.metric, files.k)
    fits = fit_values(table, files.metric, files.k)
    return configs, fits[fits["config"].isin(set(configs["config"][:TOP]))]


def comparisons(files: SearchFiles) -> list[dict]:
    """The best trial against each other trial of the top TOP: corrected t-test on the
    paired fold scores of the search's metric at the deepest epoch both trials scored
    (equal fidelity), with a sentence that says what it means. Where epochs.csv has no
    per-fold values (older searches), each trial's last epoch, flagged as mixed."""
    table = ranked(files)
    if len(table) < 2:
        return []
    best, metric, out = table.iloc[0], files.metric, []
    per_fold = bool(fold_columns(files.epochs, metric))
    for _, other in table.iloc[1:TOP].iterrows():
        a, b = str(best["trial_id"]), str(other["trial_id"])
        epoch = common_epoch(files.epochs, a, b) if per_fold else None
        if epoch is not None:
            x, y = (fold_values_at(files.epochs, t, epoch, metric) for t in (a, b))
            at = {"epoch": epoch, "mixed": False}
        else:
            x, y = files.fold_scores(best), files.fold_scores(other)
            at = {"epoch": None, "mixed": int(best["epochs"]) != int(other["epochs"])}
        test = corrected_ttest(x, y, 1 / (files.k - 1))
        out.append({"trial_id": b, **test, **at, "sentence": verdict(test, files.k)})
    return out


def verdict(test: dict, k: int) -> str:
    """A plain sentence for a corrected t-test result."""
    if np.isnan(test["p"]) or test["p"] >= 0.05:
        return f"not distinguishable on these {k} folds"
    better = "better" if test["difference"] > 0 else "worse"
    return f"the best trial is {better} on these {k} folds (p = {test['p']:.3f})"


def reference_rows(files: SearchFiles) -> pd.DataFrame:
    """Majority class and TF-IDF + per-criterion logistic regression on the search's folds.
    TF-IDF is decided by the trials' rule: fitted on each fold's fitting posts, Platt scaling
    and the macro-F1 threshold on the fold's held-out calibration posts (the best config's
    `calibration_split`, the very posts a trial's trainer holds out). Per fold: macro-F1,
    ROC-AUC, within-criterion ROC-AUC, PR-AUC and the calibration post ids."""
    from nli_tune.redsm5.load import load_redsm5

    data = load_redsm5(files.best.data_dir)
    pairs, texts = data.pairs(), data.texts()
    runs: dict[str, list[dict]] = {MAJORITY: [], TFIDF: []}
    for k, val_posts in enumerate(files.folds["folds"]):
        train_posts = [p for j, f in enumerate(files.folds["folds"]) if j != k for p in f]
        train, val = posts_frame(pairs, train_posts), posts_frame(pairs, val_posts)
        for name, folds in runs.items():
            folds.append(baseline_metrics(name, texts, train, val, files.best))
    rows = []
    for name, folds in runs.items():
        row = {"setup": name, "fold_macro_f1": [m["macro_f1"] for m in folds]}
        for key in ("criterion_macro_f1", "roc_auc", "roc_auc_within", "pr_auc"):
            row[f"cv_{key}"] = float(np.nanmean([m[key] for m in folds]))
        per = [k for k in folds[0] if k.startswith("f1_") and k != "f1_matched"]
        row["cv_f1"] = {k[3:]: float(np.mean([m[k] for m in folds])) for k in per}
        row["fold_calib_posts"] = [list(m["calib_posts"]) for m in folds]
        rows.append(row)
    return pd.DataFrame(rows)


def ablations(files: SearchFiles) -> list[tuple[str, pd.DataFrame]]:
    """For each design switch the search varied: the best trial per value."""
    table, out = ranked(files), []
    for key in ABLATION_KEYS:
        if key in table and table[key].nunique() > 1:
            best = table.groupby(key, sort=False).head(1)
            cols = ["trial_id", key, *dict.fromkeys([files.metric, "cv_macro_f1"]), "epochs"]
            out.append((key, best[cols]))
    return out
