"""Sentence templates for the synthetic ReDSM5 generator (see synth.py), read from
``data/synth_templates.json``, where each table carries a note on what it is for.

Templates are data, so they live with the criteria in ``data/``; this module only exposes
them as the immutable tables synth.py draws from (tuples, so draws stay deterministic and
nothing can edit a table in place).
"""

from __future__ import annotations

import json

from nli_tune import DATA_DIR

TEMPLATES_FILE = DATA_DIR / "synth_templates.json"


def _frozen(value):
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items() if not k.startswith("_")}
    return value


_TABLES = _frozen(json.loads(TEMPLATES_FILE.read_text(encoding="utf-8")))

SLOTS: dict[str, tuple[str, ...]] = _TABLES["SLOTS"]
POS: dict[str, tuple[str, ...]] = _TABLES["POS"]  # status-1 templates per symptom
NEG: dict[str, tuple[tuple[str, str], ...]] = _TABLES["NEG"]  # (kind, template) per symptom
SPECIAL: tuple[tuple[str, str], ...] = _TABLES["SPECIAL"]  # (description, template)
# Two-symptom sentences, keyed by the symptom pair ("A+B" in the file).
COMBO: dict[tuple[str, str], tuple[str, ...]] = {
    tuple(key.split("+")): templates for key, templates in _TABLES["COMBO"].items()
}
FILLER: tuple[str, ...] = _TABLES["FILLER"]
FILLER_INTRO: tuple[str, ...] = _TABLES["FILLER_INTRO"]
FILLER_OUTRO: tuple[str, ...] = _TABLES["FILLER_OUTRO"]
OPENERS: tuple[str, ...] = _TABLES["OPENERS"]
# Explanation column pieces (the annotators' free-text rationale).
EXPLAIN_POS: dict[str, tuple[str, ...]] = _TABLES["EXPLAIN_POS"]
EXPLAIN_LEAD: tuple[str, ...] = _TABLES["EXPLAIN_LEAD"]
EXPLAIN_TAIL: tuple[str, ...] = _TABLES["EXPLAIN_TAIL"]
TOPIC: dict[str, str] = _TABLES["TOPIC"]
NEG_REASON: dict[str, str] = _TABLES["NEG_REASON"]
NEG_TAIL: tuple[str, ...] = _TABLES["NEG_TAIL"]
SPECIAL_TAIL: tuple[str, ...] = _TABLES["SPECIAL_TAIL"]
