"""Small in-memory ReDSM5 sets and unit data for mechanics tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nli_tune.pairs.encoding import UnitData, encode_units
from nli_tune.redsm5.load import ANNOTATION_COLUMNS, ReDSM5


def redsm5(posts: dict[str, str], rows: list[tuple[str, str, str, int]] = ()) -> ReDSM5:
    """posts: post_id -> text; rows: (post_id, sentence_text, symptom, status)."""
    ann = pd.DataFrame(
        [(p, f"{p}_{i}", s, c, st, "why") for i, (p, s, c, st) in enumerate(rows)],
        columns=list(ANNOTATION_COLUMNS),
    )
    ann["status"] = ann["status"].astype(int)
    frame = pd.DataFrame({"post_id": list(posts), "text": list(posts.values())})
    return ReDSM5(posts=frame, annotations=ann, source=Path("."), fingerprint="0" * 64)


def unit_data(tok, data: ReDSM5, cfg) -> UnitData:
    return encode_units(tok, data, cfg)
