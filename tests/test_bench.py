"""The benchmark's own arithmetic (its timings are never asserted)."""

import math

import numpy as np
import pandas as pd
import pytest

from nli_tune.measure.speed import padding_figures


def test_padding_figures_count_real_and_processed_tokens():
    # Two short and two long pairs, batches of 2: bucketing pairs like with like and wastes
    # nothing; padding to max_length 8 runs 4 x 8 tokens for 12 real ones.
    figures = padding_figures(np.array([1, 5, 1, 5]), 2, 8, np.random.default_rng(0))
    assert figures["real_tokens"] == 12
    assert figures["padding_efficiency"] == 1.0
    assert figures["padding_efficiency_pad_to_max_length"] == pytest.approx(12 / 32)
    # Random batches: 12 / 20 when the shuffle pairs a 1 with a 5 (both batches run 2 x 5),
    # 1.0 when it pairs like with like. Which one depends on the seed's permutation, so the
    # expected value is worked out from that permutation, for seeds that give each case.
    seen = set()
    for seed in range(8):
        figures = padding_figures(np.array([1, 5, 1, 5]), 2, 8, np.random.default_rng(seed))
        order = np.random.default_rng(seed).permutation(4)  # the draw padding_figures makes
        mixed = {int(order[0]) % 2, int(order[1]) % 2} == {0, 1}
        expected = 12 / 20 if mixed else 1.0
        assert figures["padding_efficiency_random_longest"] == pytest.approx(expected), seed
        seen.add(mixed)
    assert seen == {True, False}


def test_bucketing_beats_random_batches_on_a_long_tail():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(3.5, 0.6, 5000).astype(int) + 20, 192)
    figures = padding_figures(lengths, 16, 192, np.random.default_rng(1))
    assert figures["padding_efficiency"] > 0.95 > figures["padding_efficiency_random_longest"]
    assert (
        figures["padding_efficiency_random_longest"]
        > figures["padding_efficiency_pad_to_max_length"]
    )


def test_search_timing_reads_overhead_idle_share_and_asha_savings():
    from nli_tune.measure.search_timing import search_timing

    # 3 trials, 2 at a time, over 100 s: 120 s of fold compute fill 60% of 2 slots x 100 s.
    table = pd.DataFrame(
        {
            "overhead_s": [20.0, 25.0, 40.0],
            "compute_s": [60.0, 40.0, 20.0],
            "epochs": [10, 3, 1],
            "cv_macro_f1": [0.6, 0.5, 0.4],
            "cv_roc_auc": [0.8, 0.9, 0.7],
            "cv_roc_auc_within": [0.7, 0.8, 0.6],
            "worker_peak_rss_mb": [900.0, 950.0, 920.0],
            "worker_tokens_per_s": [300.0, 310.0, 290.0],
        }
    )
    figures = search_timing(table, wall_s=100.0, at_once=2, max_epochs=10)
    assert figures["per_trial_overhead_s"] == 25.0
    assert figures["search_overhead_fraction"] == pytest.approx(0.4)
    assert figures["asha_epoch_savings"] == pytest.approx(1 - 14 / 30)
    assert figures["peak_rss_mb_per_worker"] == 950.0
    assert figures["tokens_per_s_per_worker"] == 300.0
    assert figures["search_s"] == 100.0
    # the best trial is the searcher metric's (within-criterion ROC-AUC), not macro-F1's
    assert figures["best_metric"] == 0.8 and figures["best_cv_roc_auc"] == 0.9


def test_hf_trainer_comparison_trains_both_loops_on_the_same_examples():
    """The comparison's correctness, not its timings: both loops saw the same examples
    (it raises otherwise) and the same real tokens, and each side really trained."""
    from nli_tune import SAMPLE_DIR
    from nli_tune.core.config import TrainConfig
    from nli_tune.measure.hf_trainer import compare_with_hf_trainer
    from nli_tune.model.classifier import build_model
    from nli_tune.pairs.encoding import encode_units
    from nli_tune.redsm5.folds import make_folds
    from nli_tune.redsm5.load import load_redsm5

    cfg = TrainConfig(
        model="tiny-random",
        num_layers=None,
        max_length=96,
        batch_size=4,
        precision="fp32",
        epochs=2,
        neg_ratio=1.0,
        pairing="nli",  # the comparison's loss is an nli pair's
    )
    data = load_redsm5(SAMPLE_DIR)
    units = encode_units(build_model(cfg)[1], data, cfg)
    train_posts, val_posts = make_folds(data.pairs(), 3, 0.15, 0).fold(0)
    figures = compare_with_hf_trainer(
        cfg, units.subset(train_posts[:30]), units.subset(val_posts[:10])
    )
    assert figures["hf_trainer_tokens"] == figures["trainer_tokens"] > 0
    assert 0 < figures["hf_trainer_padding_efficiency"] <= 1
    # 2 epochs, each every positive + 1 fresh negative per positive
    assert figures["trainer_examples"] % 2 == 0 and figures["trainer_examples"] >= 4
    assert figures["trainer_speedup_vs_hf"] == pytest.approx(
        figures["trainer_tokens_per_s_fold"] / figures["hf_trainer_tokens_per_s"]
    )
    # HF steps once per batch of its one pass; ours at least as often (one bucket per batch)
    assert figures["hf_trainer_steps"] == math.ceil(figures["trainer_examples"] / 4)
    assert figures["trainer_steps"] >= figures["hf_trainer_steps"]
    for side in ("trainer", "hf_trainer"):
        assert 0 <= figures[f"{side}_macro_f1"] <= 1


def test_goal_table_puts_each_figure_beside_its_peer():
    from nli_tune.measure.speed import goal_table

    results = {
        "trainer_speedup_vs_hf": 2000 / 1600,
        "trainer_tokens_per_s_fold": 2000.0,
        "hf_trainer_tokens_per_s": 1600.0,
        "data_seconds": 3.0,
    }
    lines, ok = goal_table(results)
    assert len(lines) == 3  # header + the two goals measured; the rest are left out
    speed = next(ln.split() for ln in lines if ln.split()[0] == "trainer_speedup_vs_hf")
    assert speed == ["trainer_speedup_vs_hf", "1.25", "2000", "1600", "1.25", ">=", "1.5", "MISSED"]
    data = next(ln.split() for ln in lines if ln.split()[0] == "data_seconds")
    assert data == ["data_seconds", "3", "<=", "30", "met"]  # no peer ran: no peer columns
    assert ok is False


def test_first_point_epoch_is_read_from_the_trial_that_ran_the_point():
    from nli_tune.measure.search_timing import first_point_epoch_s

    table = pd.DataFrame(
        {"trial_id": ["17063e69", "00812345"], "pooling": ["cls", "mean"], "lr": [2e-3, 1.5e-3]}
    )
    epochs = pd.DataFrame(
        {
            "trial_id": ["17063e69", "00812345", "00812345"],
            "epoch": [1, 1, 2],
            "epoch_compute_s": [50.0, 70.0, 65.0],
        }
    )
    assert first_point_epoch_s(table, epochs, {"pooling": "mean", "lr": 1.5e-3}) == 70.0


def test_a_report_only_goal_is_printed_but_not_judged():
    from nli_tune.measure.speed import goal_table

    results = {"fold_parallel_ratio": 2.0, "fold_parallel_epoch_s": 70.0, "fold_alone_s": 35.0}
    lines, ok = goal_table(results, frozenset({"fold_parallel_ratio"}))
    assert lines[1].split() == [
        "fold_parallel_ratio",
        "2",
        "70",
        "35",
        "2.00",
        "<=",
        "1.15",
        "report",
    ]
    assert ok is True
    assert goal_table(results)[1] is False


def test_asha_comparison_counts_epochs_and_the_best_score_given_up():
    from nli_tune.measure.search_timing import asha_comparison, search_timing

    # 4 trials of at most 3 epochs: ASHA ran 3 + 1 + 1 + 3, without it 4 x 3
    asha = pd.DataFrame(
        {"epochs": [3, 1, 1, 3], "cv_macro_f1": [0.60, 0.50, 0.52, 0.63], "overhead_s": 20.0}
    )
    asha["cv_roc_auc_within"] = asha["cv_macro_f1"] + 0.1
    asha["cv_roc_auc"] = asha["cv_macro_f1"] + 0.2
    asha["compute_s"] = asha["epochs"] * 70.0
    asha["worker_peak_rss_mb"], asha["worker_tokens_per_s"] = 1600.0, 800.0
    full = asha.assign(epochs=3, cv_roc_auc_within=[0.70, 0.75, 0.62, 0.71])
    with_asha = search_timing(asha, 700.0, 1, 3)
    assert with_asha["epochs_run"] == 8 and with_asha["no_asha_epochs_run"] == 12
    assert with_asha["asha_epoch_savings"] == pytest.approx(1 - 8 / 12)
    figures = asha_comparison(with_asha, search_timing(full, 1000.0, 1, 3))
    assert figures["asha_epoch_savings"] == pytest.approx(1 - 8 / 12)
    # run out, the second trial (stopped at epoch 1 with ASHA) ends best: 0.75 against 0.73
    assert figures["asha_best_loss"] == pytest.approx(0.02)
    assert figures["no_asha_best_metric"] == pytest.approx(0.75)


def test_goals_a_run_cannot_judge_are_reported_not_judged():
    from nli_tune.measure.speed import unjudged

    assert unjudged(2, 16, 3) == frozenset()
    assert unjudged(2, 2, None) == frozenset()  # no fold timing in this run
    assert unjudged(2, 2, 3) == {"fold_parallel_ratio"}  # 3 folds share 2 cores
    assert unjudged(1, 16, None) == {"trainer_f1_gap"}  # one epoch: F1 at 0.5 says nothing
    assert unjudged(1, 2, 3) == {"trainer_f1_gap", "fold_parallel_ratio"}
    # the best trial's ROC-AUC goal is the main job's; a cut search stops short of it
    assert unjudged(2, 16, 3, main_job=False) == {"best_cv_roc_auc"}


def test_rung_rank_correlation_compares_each_rung_with_the_end_per_metric():

    from nli_tune.reporting.fidelity import rung_rank_correlation
    from nli_tune.study.space import METRICS

    rows = []
    for t in range(5):  # trial t ends at 0.5 + 0.1 t on every metric
        for epoch in (1, 2, 3):
            row = {"trial_id": f"t{t}", "epoch": epoch}
            for m in METRICS:
                end = 0.5 + 0.1 * t
                start = end if m == "cv_pr_auc" else 1.0 - end  # same order / reversed
                row[m] = end if epoch == 3 else start
                row |= {f"fold0_{m[3:]}": row[m] - 0.05, f"fold1_{m[3:]}": row[m] + 0.05}
            rows.append(row)
    rows.append({"trial_id": "short", "epoch": 1} | {m: 0.9 for m in METRICS})  # never ended
    table = rung_rank_correlation(pd.DataFrame(rows), [1, 2])
    assert set(table) == {"1", "2"}
    for rung in ("1", "2"):
        assert table[rung]["cv_pr_auc"]["spearman"] == pytest.approx(1.0)
        assert table[rung]["cv_macro_f1"]["spearman"] == pytest.approx(-1.0)
        assert table[rung]["cv_pr_auc"]["trials"] == 5  # "short" has no later epoch
        assert table[rung]["cv_roc_auc"]["fold_std"] == pytest.approx(0.05)


def test_bench_rungs_reads_a_search_folder_and_names_a_missing_one(tmp_path, capsys):
    import json

    from nli_tune.bench import main
    from nli_tune.core.errors import run_cli

    rows = [
        {"trial_id": f"t{t}", "epoch": e, "cv_pr_auc": 0.1 * t + 0.01 * e} for t in range(4)
        for e in (1, 2)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "epochs.csv", index=False)
    assert main(["rungs", str(tmp_path), "--output", str(tmp_path / "r.json")]) == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["trials"] == 4 and list(out["rung_rank_correlation"]) == ["1"]
    assert out["rung_rank_correlation"]["1"]["cv_pr_auc"]["spearman"] == pytest.approx(1.0)
    assert run_cli(main, ["rungs", str(tmp_path / "nowhere")]) == 2
    assert "nowhere/epochs.csv: not found" in capsys.readouterr().err
