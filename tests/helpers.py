"""Small in-memory ReDSM5 sets and unit data for mechanics tests."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pandas as pd

from nli_tune import REPO_ROOT
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


DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def doc_commands() -> list[tuple[str, str]]:
    """(file name, command) for every `python -m nli_tune.X ...` line of a code block in
    the README and docs/*.md, comments cut, in the order they appear."""
    found = []
    for path in DOC_FILES:
        for line in path.read_text().splitlines():
            match = re.match(r"^ {4}.*?(python -m nli_tune\.[^#\"]*)", line)
            if match:
                found.append((path.name, match.group(1).strip()))
    return found


def doc_command(fragment: str) -> list[str]:
    """argv of the one docs command that contains `fragment`, with this interpreter and
    the repo's relative paths made absolute (tests run in temporary folders)."""
    (command,) = {c for _, c in doc_commands() if fragment in c}
    argv = shlex.split(command)
    argv[0] = sys.executable
    return [str(REPO_ROOT / a) if (REPO_ROOT / a).exists() and "/" in a else a for a in argv]
