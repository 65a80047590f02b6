"""Which config a search exports (study/selection.py), on hand-made cv_results rows."""

import numpy as np
import pandas as pd
import pytest

from nli_tune.study.selection import confirmation_candidates, rank_configs

M = "cv_roc_auc_within"


def _row(tid, folds, status="completed", epochs=8, learned=(1, 1), confirms="", stage="search"):
    row = {"trial_id": tid, "status": status, "epochs": epochs, M: float(np.mean(folds))}
    row |= {"stage": stage, "confirms": confirms}
    row |= {f"fold{k}_roc_auc_within": v for k, v in enumerate(folds)}
    row |= {f"fold{k}_learned": float(v) for k, v in enumerate(learned)}
    row |= {f"fold{k}_seed": 100 * len(tid) + k for k in range(len(folds))}
    row["fits_failed"] = sum(1 - v for v in learned)
    return row


def test_an_asha_stopped_trial_never_wins_on_its_earlier_epoch():
    table = pd.DataFrame(
        [_row("early", [0.99, 0.98], status="stopped early", epochs=1), _row("full", [0.8, 0.7])]
    )
    ranked = rank_configs(table, M, 2)
    assert list(ranked["config"]) == ["full"]  # the stopped trial does not compete at all
    assert confirmation_candidates(table, M, 3) == ["full"]


def test_a_config_with_a_fit_that_did_not_learn_ranks_below_every_one_that_learned():
    table = pd.DataFrame([_row("flaky", [0.95, 0.55], learned=(1, 0)), _row("steady", [0.8, 0.78])])
    ranked = rank_configs(table, M, 2)
    assert list(ranked["config"]) == ["steady", "flaky"]
    assert list(ranked["fits_failed"]) == [0, 1] and list(ranked["eligible"]) == [True, False]
    assert confirmation_candidates(table, M, 3) == ["steady"]  # reruns only what learned


def test_confirmed_configs_are_judged_on_every_fit_and_rank_before_unconfirmed_ones():
    rows = [
        _row("a", [0.90, 0.88]),  # best in the search ...
        _row("b", [0.85, 0.84]),
        _row("c", [0.84, 0.80]),  # never confirmed: its two fits alone
        # ... but its reruns with new seeds are worse than b's
        _row("a_r1", [0.70, 0.72], confirms="a", stage="confirmation"),
        _row("b_r1", [0.83, 0.86], confirms="b", stage="confirmation"),
    ]
    table = pd.DataFrame(rows)
    assert confirmation_candidates(table, M, 2) == ["a", "b"]
    ranked = rank_configs(table, M, 2).set_index("config")
    assert ranked.index[0] == "b"
    assert ranked.loc["b", "mean"] == pytest.approx(np.mean([0.85, 0.84, 0.83, 0.86]))
    assert ranked.loc["a", "mean"] == pytest.approx(np.mean([0.90, 0.88, 0.70, 0.72]))
    assert (ranked.loc["a", "fits"], ranked.loc["a", "runs"]) == (4, 2)
    # c's mean (0.82) is above a's (0.80), but only confirmed configs come first
    assert list(ranked.index) == ["b", "a", "c"]


def test_a_failed_rerun_makes_its_config_ineligible():
    rows = [
        _row("a", [0.90, 0.88]),
        _row("a_r1", [0.91, 0.50], learned=(1, 0), confirms="a", stage="confirmation"),
        _row("b", [0.80, 0.79]),
    ]
    ranked = rank_configs(pd.DataFrame(rows), M, 2)
    assert list(ranked["config"]) == ["b", "a"] and ranked["fits_failed"].tolist() == [0, 1]
