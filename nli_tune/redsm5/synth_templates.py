"""Sentence templates for the synthetic ReDSM5 generator (see synth.py), read from
``data/synth_templates.json``, where each table carries a note on what it is for.

Templates are data, so they live with the criteria in ``data/``; this module only exposes
them as the immutable tables synth.py draws from (tuples, so draws stay deterministic and
nothing can edit a table in place).

The labelled tables (POS, NEG, COMBO) are also split into a ``seen`` and a ``heldout`` part
(see ``part``), so a test set can be drawn in wording that no model trained on the bundled
sample has seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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


# Held-out split. Rule: in every labelled list (POS[symptom], NEG[symptom], each COMBO pair)
# the templates at indices 3, 7, 11, ... (every 4th, counting from 0) are held out; a list
# shorter than 4 holds out its last template instead, so every list has at least one. That
# is about a quarter of each list, fixed by position alone: append new templates at the end
# of a list (of 4 or more), since inserting or reordering moves templates between the parts
# and so changes what the bundled sample (drawn from the seen part) contains.
# SPECIAL (no criterion label) and the FILLER tables (no label at all) stay shared: a model
# cannot learn a criterion from their wording, so hiding them tests nothing.
HELDOUT_EVERY = 4
TEMPLATE_SETS = ("seen", "heldout", "all")


def heldout_indices(n: int) -> frozenset[int]:
    """Indices held out of a labelled list of n templates (the rule above)."""
    held = range(HELDOUT_EVERY - 1, n, HELDOUT_EVERY)
    return frozenset(held) if held else frozenset({n - 1} if n else ())


@dataclass(frozen=True)
class Part:
    """The labelled tables one draw may use; keys are exactly those of POS, NEG and COMBO."""

    pos: dict[str, tuple[str, ...]]
    neg: dict[str, tuple[tuple[str, str], ...]]
    combo: dict[tuple[str, str], tuple[str, ...]]


def _split(items: tuple, held: bool) -> tuple:
    out = heldout_indices(len(items))
    return tuple(x for i, x in enumerate(items) if (i in out) == held)


def _part(held: bool) -> Part:
    def cut(table: dict) -> dict:
        return {key: _split(items, held) for key, items in table.items()}

    return Part(cut(POS), cut(NEG), cut(COMBO))


_PARTS = {"seen": _part(False), "heldout": _part(True), "all": Part(POS, NEG, COMBO)}


def part(templates: str) -> Part:
    """The ``seen``, ``heldout`` or ``all`` labelled templates; ValueError for any other name."""
    if templates not in _PARTS:
        raise ValueError(f"templates must be one of {', '.join(TEMPLATE_SETS)}, got {templates!r}")
    return _PARTS[templates]
