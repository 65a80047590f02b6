"""Seeds of fold fits: every fit draws its own luck, from numbers that say which fit it is.

A search's trials would otherwise all fit their folds with the config's one `seed`, so a
setup that learns for one seed and not the next would rank as if it always learned. Each
fit's seed is numpy's SeedSequence over the base seed and the fit's parts (a digest of the
trial's sampled config, the fold, the repeat): reproducible, and different for every fit.
"""

from __future__ import annotations

import json
import zlib

import numpy as np


def fit_seed(seed: int, *parts: int | str | dict) -> int:
    """A 31-bit seed for the fit named by `parts` (ints as they are; a string or a config
    dict by its CRC-32)."""
    words = [int(seed) & 0xFFFFFFFF]
    for part in parts:
        if isinstance(part, dict):
            part = json.dumps(part, sort_keys=True, default=str)
        words.append(zlib.crc32(part.encode()) if isinstance(part, str) else int(part))
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)
