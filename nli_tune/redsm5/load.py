"""ReDSM5 loading, validation and (post, criterion) NLI pairs.

Post text stays in memory: only ids, labels and counts leave (`python -m nli_tune.data`
prints them).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from nli_tune import DATA_DIR, SAMPLE_DIR
from nli_tune.core.errors import UserError

POST_COLUMNS = ("post_id", "text")
ANNOTATION_COLUMNS = (
    "post_id",
    "sentence_id",
    "sentence_text",
    "DSM5_symptom",
    "status",
    "explanation",
)
NON_CRITERIA = ("SPECIAL_CASE",)


@dataclass(frozen=True)
class Criterion:
    key: str  # ReDSM5 symptom label, e.g. SLEEP_ISSUES
    name: str  # short human name
    description: str  # the NLI hypothesis paired with each post


@cache
def criteria() -> tuple[Criterion, ...]:
    """The 9 DSM-5 criteria in DSM order, from data/dsm5_criteria.json."""
    raw = json.loads((DATA_DIR / "dsm5_criteria.json").read_text(encoding="utf-8"))
    return tuple(Criterion(c["key"], c["name"], c["description"]) for c in raw["criteria"])


def criterion_keys() -> tuple[str, ...]:
    return tuple(c.key for c in criteria())


def n_criteria() -> int:
    """How many criteria a post is paired with (9: the DSM-5 list in the criteria file)."""
    return len(criteria())


@dataclass(frozen=True)
class ReDSM5:
    posts: pd.DataFrame  # post_id, text; one row per post, file order
    annotations: pd.DataFrame  # ANNOTATION_COLUMNS, status as int
    source: Path
    fingerprint: str  # sha256 over both files' bytes: identifies the data in exports

    def pairs(self) -> pd.DataFrame:
        """Every post x 9 criteria: post_id, criterion, label (1 iff any status-1 row)."""
        keys = criterion_keys()
        positive = self.annotations[self.annotations["status"] == 1]
        matched = set(zip(positive["post_id"], positive["DSM5_symptom"], strict=True))
        post_ids = self.posts["post_id"].to_numpy()
        pid = np.repeat(post_ids, len(keys))
        crit = np.tile(np.array(keys, dtype=object), len(post_ids))
        label = np.fromiter(
            ((p, c) in matched for p, c in zip(pid, crit, strict=True)), int, count=len(pid)
        )
        return pd.DataFrame({"post_id": pid, "criterion": crit, "label": label})

    def texts(self) -> dict[str, str]:
        return dict(zip(self.posts["post_id"], self.posts["text"], strict=True))


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return SAMPLE_DIR if data_dir is None else Path(data_dir)


def load_redsm5(data_dir: str | Path | None = None) -> ReDSM5:
    """Load and validate a ReDSM5 directory (official or `_sample_paraphrased` file names)."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise UserError(f"{root}: data directory not found (pass --data-dir with your ReDSM5 copy)")
    posts_path = _find_one(root, "redsm5_posts*.csv")
    ann_path = _find_one(root, "redsm5_annotations*.csv")
    posts_bytes, ann_bytes = posts_path.read_bytes(), ann_path.read_bytes()
    posts = _read_posts(posts_path, posts_bytes)
    ann = _read_csv(ann_path, ann_bytes, ANNOTATION_COLUMNS)

    known_posts = set(posts["post_id"])
    unknown = ann[~ann["post_id"].isin(known_posts)]
    if len(unknown):
        raise UserError(
            f"{ann_path}: annotation for unknown post_id '{unknown['post_id'].iloc[0]}' "
            f"(line {int(unknown.index[0]) + 2}; not in {posts_path.name})"
        )
    allowed = set(criterion_keys()) | set(NON_CRITERIA)
    bad_sym = ann[~ann["DSM5_symptom"].isin(allowed)]
    if len(bad_sym):
        raise UserError(
            f"{ann_path}: unknown DSM5_symptom '{bad_sym['DSM5_symptom'].iloc[0]}' "
            f"(line {int(bad_sym.index[0]) + 2}; expected one of {', '.join(sorted(allowed))})"
        )
    bad_status = ann[~ann["status"].str.strip().isin(["0", "1"])]
    if len(bad_status):
        raise UserError(
            f"{ann_path}: status '{bad_status['status'].iloc[0]}' is not 0 or 1 "
            f"(line {int(bad_status.index[0]) + 2})"
        )
    ann = ann.assign(status=ann["status"].str.strip().astype(int))
    digest = hashlib.sha256(posts_bytes + b"\0" + ann_bytes).hexdigest()
    return ReDSM5(posts=posts, annotations=ann, source=root, fingerprint=digest)


def read_posts(path: str | Path) -> pd.DataFrame:
    """A validated posts CSV (`post_id,text`, the ReDSM5 posts format), e.g. for predict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: posts file not found (expected a CSV with post_id,text)")
    return _read_posts(path, path.read_bytes())


def _read_posts(path: Path, raw: bytes) -> pd.DataFrame:
    posts = _read_csv(path, raw, POST_COLUMNS)
    if posts.empty:
        raise UserError(f"{path}: no posts (only a header)")
    dup = posts["post_id"][posts["post_id"].duplicated()]
    if len(dup):
        raise UserError(f"{path}: duplicate post_id '{dup.iloc[0]}'")
    for col in ("post_id", "text"):
        blank = posts[posts[col].str.strip() == ""]
        if len(blank):
            row = int(blank.index[0]) + 2  # +1 header, +1 one-based
            what = f"post_id '{blank['post_id'].iloc[0]}'" if col == "text" else f"line {row}"
            raise UserError(f"{path}: empty {col} for {what} (line {row})")
    return posts


def _find_one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise UserError(f"{root}: no file matching {pattern} (expected ReDSM5 CSVs)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{root}: several files match {pattern} ({names}); keep one")
    return found[0]


def _read_csv(path: Path, raw: bytes, columns: tuple[str, ...]) -> pd.DataFrame:
    if not raw.strip():
        raise UserError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 (invalid byte at offset {err.start})") from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column '{missing[0]}' (has: {', '.join(frame.columns)})")
    return frame[list(columns)].reset_index(drop=True)


def stats(data: ReDSM5) -> dict:
    """Counts only (never text): posts, pairs, matched pairs per criterion, length percentiles."""
    pairs = data.pairs()
    per_crit = pairs.groupby("criterion", sort=False)["label"].sum()
    words = data.posts["text"].str.split().str.len().to_numpy()
    special = data.annotations[data.annotations["DSM5_symptom"].isin(NON_CRITERIA)]
    pct = (5, 25, 50, 75, 95)
    return {
        "posts": len(data.posts),
        "annotations": len(data.annotations),
        "pairs": len(pairs),
        "matched_pairs": int(pairs["label"].sum()),
        "matched_rate": round(float(pairs["label"].mean()), 4),
        "matched_per_criterion": {k: int(per_crit.get(k, 0)) for k in criterion_keys()},
        "posts_with_no_match": int((pairs.groupby("post_id")["label"].sum() == 0).sum()),
        "special_case_posts": int(special["post_id"].nunique()),
        "negative_annotations": int((data.annotations["status"] == 0).sum()),
        "words_per_post": {f"p{p}": int(np.percentile(words, p)) for p in pct}
        | {"mean": round(float(words.mean()), 1)},
        "fingerprint": data.fingerprint[:16],
    }
