"""The benchmark's own arithmetic (its timings are never asserted)."""

import numpy as np
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
