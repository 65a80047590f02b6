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

from nli_tune.baselines import majority_baseline, tfidf_scores
from nli_tune.config import TrainConfig, read_mapping
from nli_tune.errors import UserError
from nli_tune.metrics import classification_metrics, corrected_ttest
from nli_tune.outputs import read_table
from nli_tune.space import SearchSpace, load_space

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

    def fold_scores(self, row: pd.Series) -> np.ndarray:
        return np.array([row[f"fold{i}_macro_f1"] for i in range(self.k)], dtype=float)


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


def ranked(files: SearchFiles) -> pd.DataFrame:
    """Trials with a score, best first."""
    scored = files.results.dropna(subset=["cv_macro_f1"])
    return scored.sort_values("cv_macro_f1", ascending=False, kind="stable")


def comparisons(files: SearchFiles) -> list[dict]:
    """The best trial against each other trial of the top TOP: corrected t-test on the
    paired fold scores, with a sentence that says what it means."""
    table = ranked(files)
    if len(table) < 2:
        return []
    best = table.iloc[0]
    out = []
    for _, other in table.iloc[1:TOP].iterrows():
        test = corrected_ttest(files.fold_scores(best), files.fold_scores(other), 1 / (files.k - 1))
        out.append({"trial_id": other["trial_id"], **test, "sentence": verdict(test, files.k)})
    return out


def verdict(test: dict, k: int) -> str:
    """A plain sentence for a corrected t-test result."""
    if np.isnan(test["p"]) or test["p"] >= 0.05:
        return f"not distinguishable on these {k} folds"
    better = "better" if test["difference"] > 0 else "worse"
    return f"the best trial is {better} on these {k} folds (p = {test['p']:.3f})"


def reference_rows(files: SearchFiles) -> pd.DataFrame:
    """Majority class and TF-IDF + per-criterion logistic regression on the search's folds:
    macro-F1 per fold (decision at 0.5, as in `train`) and ROC-AUC."""
    from nli_tune.data import load_redsm5

    data = load_redsm5(files.best.data_dir)
    pairs, texts = data.pairs(), data.texts()
    rows = []
    for name in ("majority class", "TF-IDF + logistic regression"):
        f1s, aucs = [], []
        for k, val_posts in enumerate(files.folds["folds"]):
            train_posts = {p for j, f in enumerate(files.folds["folds"]) if j != k for p in f}
            train = pairs[pairs["post_id"].isin(train_posts)].reset_index(drop=True)
            val = pairs[pairs["post_id"].isin(set(val_posts))].reset_index(drop=True)
            if name == "majority class":
                m = majority_baseline(train, val)
            else:
                scores = tfidf_scores(texts, train, val, files.best.seed)
                m = classification_metrics(val["label"].to_numpy(), scores)
            f1s.append(m["macro_f1"])
            aucs.append(m["roc_auc"])
        rows.append({"setup": name, "fold_macro_f1": f1s, "cv_roc_auc": float(np.nanmean(aucs))})
    return pd.DataFrame(rows)


def ablations(files: SearchFiles) -> list[tuple[str, pd.DataFrame]]:
    """For each design switch the search varied: the best trial per value."""
    table, out = ranked(files), []
    for key in ABLATION_KEYS:
        if key in table and table[key].nunique() > 1:
            best = table.groupby(key, sort=False).head(1)
            out.append(
                (key, best[["trial_id", key, "cv_macro_f1", "cv_macro_f1_std", "cv_roc_auc"]])
            )
    return out
