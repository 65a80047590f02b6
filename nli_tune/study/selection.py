"""Which config a search exports: compared at equal epochs, on every fit of it, among
configs whose fits all learned. No Ray here: it reads cv_results.csv-shaped rows.

A search trial that ASHA stopped was scored at an earlier epoch than the ones that ran to
the end, so it never competes: only configs whose search trial completed do. Each such
config is judged on the mean of the searcher's metric over all its fits: its trial's K
folds and, where the confirmation stage reran it with new seeds, theirs too. A config any
of whose fits did not learn (training/learned.py) is ranked below every config whose fits
all did: a setup that learns for one seed and not the next is not the answer. Where the
confirmation stage ran, the configs it reran come first: the others' values are their
trial's alone, as lucky as the search's selection made them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nli_tune.study.run_files import COMPLETED
from nli_tune.study.space import fold_column

SEARCH, CONFIRMATION = "search", "confirmation"  # a cv_results.csv row's stage


def with_stages(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with its `stage` and `confirms` columns (a search without a confirmation
    stage has only search rows) and `config`: the search trial whose config a row ran."""
    table = table.copy()
    if "stage" not in table:
        table["stage"] = SEARCH
    confirms = table["confirms"] if "confirms" in table else pd.Series("", index=table.index)
    table["confirms"] = confirms.fillna("").astype(str)
    table["config"] = table["trial_id"].where(table["confirms"] == "", table["confirms"])
    return table


def fit_values(table: pd.DataFrame, metric: str, folds: int) -> pd.DataFrame:
    """One row per fold fit of every completed run: config, trial, fold, seed, the
    metric's value and whether the fit learned."""
    table = with_stages(table)
    rows = []
    for _, run in table[table["status"] == COMPLETED].iterrows():
        for k in range(folds):
            learned = run.get(f"fold{k}_learned", 1.0)
            rows.append(
                {
                    "config": run["config"],
                    "trial_id": run["trial_id"],
                    "stage": run["stage"],
                    "fold": k,
                    "seed": run.get(f"fold{k}_seed"),
                    "value": run.get(fold_column(metric, k)),
                    "learned": bool(learned == 1 or pd.isna(learned)),
                }
            )
    columns = ["config", "trial_id", "stage", "fold", "seed", "value", "learned"]
    return pd.DataFrame(rows, columns=columns)


def rank_configs(table: pd.DataFrame, metric: str, folds: int) -> pd.DataFrame:
    """Every config whose search trial completed, best first: mean and std of `metric`
    over all its fits, how many fits and runs it has and how many fits did not learn.
    Configs none of whose fits failed (`eligible`) rank first, then those the confirmation
    stage reran (`confirmed`), then by the mean."""
    table = with_stages(table)
    searched = table[(table["stage"] == SEARCH) & (table["status"] == COMPLETED)]
    fits = fit_values(table, metric, folds)
    fits = fits[fits["config"].isin(set(searched["trial_id"]))]
    if fits.empty:
        return pd.DataFrame(
            columns=[
                "config",
                "mean",
                "std",
                "fits",
                "runs",
                "fits_failed",
                "eligible",
                "confirmed",
            ]
        )
    ranked = fits.groupby("config", sort=False).agg(
        mean=("value", lambda v: float(np.nanmean(v.astype(float)))),
        std=("value", lambda v: float(np.nanstd(v.astype(float)))),
        fits=("value", "size"),
        runs=("trial_id", "nunique"),
        fits_failed=("learned", lambda v: int((~v).sum())),
    )
    ranked["eligible"] = ranked["fits_failed"] == 0
    ranked["confirmed"] = ranked["runs"] > 1
    ranked = ranked.reset_index().sort_values(
        ["eligible", "confirmed", "mean", "config"], ascending=[False, False, False, True]
    )
    return ranked.reset_index(drop=True)


def confirmation_candidates(table: pd.DataFrame, metric: str, top: int) -> list[str]:
    """The `top` completed search trials whose fits all learned, by `metric` at their last
    (full) epoch: the configs the confirmation stage reruns."""
    table = with_stages(table)
    done = table[(table["status"] == COMPLETED) & (table["stage"] == SEARCH)]
    if "fits_failed" in done:
        done = done[done["fits_failed"].fillna(0) == 0]
    done = done[np.isfinite(done[metric].astype(float))]
    return list(done.sort_values([metric, "trial_id"], ascending=[False, True])["trial_id"][:top])
