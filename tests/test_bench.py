"""The benchmark's own arithmetic (its timings are never asserted)."""

import numpy as np
import pandas as pd
import pytest

from nli_tune.bench import padding_figures


def test_padding_figures_count_real_and_processed_tokens():
    # Two short and two long pairs, batches of 2: bucketing pairs like with like and wastes
    # nothing; padding to max_length 8 runs 4 x 8 tokens for 12 real ones.
    figures = padding_figures(np.array([1, 5, 1, 5]), 2, 8, np.random.default_rng(0))
    assert figures["real_tokens"] == 12
    assert figures["padding_efficiency"] == 1.0
    assert figures["padding_efficiency_pad_to_max_length"] == pytest.approx(12 / 32)
    assert figures["padding_efficiency_random_longest"] in (1.0, pytest.approx(12 / 20))


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
    from nli_tune.bench_search import search_timing

    # 3 trials, 2 at a time, over 100 s: 120 s of fold compute fill 60% of 2 slots x 100 s.
    table = pd.DataFrame(
        {
            "overhead_s": [20.0, 25.0, 40.0],
            "compute_s": [60.0, 40.0, 20.0],
            "epochs": [10, 3, 1],
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
