"""Units of each post (the NLI premises) and their evidence labels from the annotations.

post -> units: a post is cut into sentences (or windows of sentences, or kept whole: the
ablation), each with its character span in the post. The annotators' evidence sentences are
located in the post (exact, then normalised match) and label the units they overlap:

- a unit overlapping a `status == 1` sentence of criterion c is evidence for c (label 1);
- in a post matched for c whose every status-1 sentence was located, the other units are
  not (0); where some could not be located they are unknown (-1: only the post-level loss
  sees them);
- every unit of a post unmatched for c is 0; one overlapping a `status == 0` sentence is a
  *hard* negative (an explicit absence the annotators wrote down).

Annotation sentences that cannot be located (the public paraphrased sample: 0 of 25) become
units of their own ("external", no offsets): training examples only, never scored as part
of a post. Text stays in memory; only spans, ids and counts leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nli_tune.redsm5.load import ReDSM5, criterion_keys
from nli_tune.units.segment import locate, sentence_spans, units_overlapping, window_spans

UNIT_MAX_WORDS = 64  # a longer "sentence" (no punctuation) is cut into 64-word pieces


@dataclass(frozen=True)
class UnitTable:
    post_ids: np.ndarray  # object [n]: the post each unit belongs to
    starts: np.ndarray  # int64 [n]: character offset of the unit in its post; -1 = external
    ends: np.ndarray  # int64 [n]: end offset (exclusive); -1 = external
    texts: list[str]  # the unit's text: memory only, never written anywhere
    evidence: np.ndarray  # int8 [n, 9]: 1 evidence for the criterion, 0 not, -1 unknown
    hard: np.ndarray  # bool [n, 9]: overlaps an annotated explicit absence (status 0)
    annotated: np.ndarray  # bool [n, 9]: overlaps a located status-1 sentence (for hit@1)

    def __len__(self) -> int:
        return len(self.post_ids)

    @property
    def external(self) -> np.ndarray:
        return self.starts < 0


@dataclass(frozen=True)
class LocationReport:
    annotations: int  # criterion rows (SPECIAL_CASE excluded)
    exact: int  # found verbatim in the post
    normalised: int  # found after normalising quotes, dashes, case and whitespace
    not_located: int  # used as external units

    @property
    def located(self) -> int:
        return self.exact + self.normalised

    def line(self) -> str:
        return (
            f"annotations located in their posts: {self.located} of {self.annotations} "
            f"(exact {self.exact}, normalised {self.normalised}; {self.not_located} not "
            f"found, used as units of their own)"
        )


def post_spans(text: str, unit: str, window_sentences: int = 3, window_stride: int = 2):
    """Character spans of a post's units, whitespace trimmed."""
    if unit == "post":
        spans = [(0, len(text))]
    else:
        spans = sentence_spans(text, max_words=UNIT_MAX_WORDS)
        if unit == "window":
            spans = window_spans(spans, window_sentences, window_stride)
    out = []
    for start, end in spans:
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if end - trail > start + lead:  # whitespace-only units carry nothing
            out.append((start + lead, end - trail))
    return out or [(0, len(text))]


def build_units(
    data: ReDSM5, unit: str = "sentence", window_sentences: int = 3, window_stride: int = 2
) -> tuple[UnitTable, LocationReport]:
    keys = criterion_keys()
    col = {k: i for i, k in enumerate(keys)}
    pairs = data.pairs()
    pos = pairs[pairs["label"] == 1]
    matched = set(zip(pos["post_id"], pos["criterion"], strict=True))
    ann = data.annotations[data.annotations["DSM5_symptom"].isin(keys)]
    by_post = {pid: rows for pid, rows in ann.groupby("post_id", sort=False)}
    texts_of = data.texts()

    post_ids, starts, ends, texts, evid, hard, annotated = [], [], [], [], [], [], []
    exact = normalised = missing = 0
    for pid in data.posts["post_id"]:
        text = texts_of[pid]
        spans = post_spans(text, unit, window_sentences, window_stride)
        n = len(spans)
        e = np.zeros((n, len(keys)), np.int8)
        h = np.zeros((n, len(keys)), bool)
        a = np.zeros((n, len(keys)), bool)
        unlocated: dict[str, list[tuple[int, int]]] = {}  # sentence -> [(criterion, status)]
        fully_located = {c: True for c in keys}
        for sentence, symptom, status in _rows(by_post.get(pid)):
            span = None if unit == "post" else locate(text, sentence)
            if unit == "post":  # the whole post is one unit: every annotation is in it
                exact += 1
                span = (0, len(text))
            elif span is None:
                missing += 1
                unlocated.setdefault(sentence.strip(), []).append((col[symptom], status))
                fully_located[symptom] &= status != 1
                continue
            elif text[span[0] : span[1]] == sentence.strip():
                exact += 1
            else:
                normalised += 1
            hit = units_overlapping(spans, span)
            if status == 1:
                a[hit, col[symptom]] = True
            else:
                h[hit, col[symptom]] = True
        for c in keys:
            if (pid, c) in matched:
                e[:, col[c]] = np.where(a[:, col[c]], 1, 0 if fully_located[c] else -1)
        h &= e != 1
        post_ids += [pid] * n
        starts += [s for s, _ in spans]
        ends += [t for _, t in spans]
        texts += [text[s:t] for s, t in spans]
        evid.append(e), hard.append(h), annotated.append(a)
        for sentence, rows in unlocated.items():  # external units: training examples only
            e = np.zeros((1, len(keys)), np.int8)
            h = np.zeros((1, len(keys)), bool)
            for c, status in rows:
                e[0, c] = max(e[0, c], status)
                h[0, c] |= status == 0
            post_ids.append(pid), starts.append(-1), ends.append(-1), texts.append(sentence)
            evid.append(e), hard.append(h & (e != 1)), annotated.append(np.zeros_like(h))
    table = UnitTable(
        post_ids=np.asarray(post_ids, dtype=object),
        starts=np.asarray(starts, np.int64),
        ends=np.asarray(ends, np.int64),
        texts=texts,
        evidence=np.concatenate(evid),
        hard=np.concatenate(hard),
        annotated=np.concatenate(annotated),
    )
    return table, LocationReport(exact + normalised + missing, exact, normalised, missing)


def _rows(frame):
    if frame is None:
        return []
    return zip(frame["sentence_text"], frame["DSM5_symptom"], frame["status"], strict=True)


def location_report(data: ReDSM5) -> LocationReport:
    """How many criterion annotations are found in their posts (for `data check`)."""
    return build_units(data, "sentence")[1]
