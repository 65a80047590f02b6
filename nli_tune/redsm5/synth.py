"""Synthetic data in the exact ReDSM5 format (``redsm5_posts.csv``, ``redsm5_annotations.csv``).

The real ReDSM5 set is gated, so this generator stands in for it as the bundled default and
for benchmarks. It is meant to be a fair stand-in, not a giveaway: symptom prevalence follows
the real set, and hard negatives (status 0 rows: denials, resolved past episodes, other
people, hypotheticals, brief reactions) reuse the positives' topic words so that a
bag-of-words model cannot read the label off keywords.
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect
from collections import defaultdict
from functools import cache
from itertools import accumulate
from pathlib import Path

import pandas as pd

from nli_tune.redsm5 import synth_templates as tpl
from nli_tune.redsm5.load import ANNOTATION_COLUMNS, NON_CRITERIA, POST_COLUMNS, criterion_keys

SYMPTOMS = criterion_keys()  # the 9 criteria in DSM order (data/dsm5_criteria.json)
(SPECIAL_CASE,) = NON_CRITERIA
LABELS: tuple[str, ...] = (*SYMPTOMS, SPECIAL_CASE)

POSTS_FILE = "redsm5_posts.csv"
ANNOTATIONS_FILE = "redsm5_annotations.csv"

# Real ReDSM5 (1,484 posts): posts with at least one status-1 row per label, and posts with
# none at all. The generator reproduces these rates at any n_posts.
REAL_POSTS = 1484
REAL_NONE = 392
REAL_COUNTS: dict[str, int] = {
    "DEPRESSED_MOOD": 328,
    "ANHEDONIA": 124,
    "APPETITE_CHANGE": 44,
    "SLEEP_ISSUES": 102,
    "PSYCHOMOTOR": 35,
    "FATIGUE": 124,
    "WORTHLESSNESS": 311,
    "COGNITIVE_ISSUES": 59,
    "SUICIDAL_THOUGHTS": 165,
    "SPECIAL_CASE": 92,
}
# Labels per symptomatic post: 1,384 label-posts over 1,092 posts is a mean of ~1.27, so most
# symptomatic posts have one label and about a fifth have several.
K_PROBS = (0.775, 0.186, 0.034, 0.005)
# Co-occurring pairs: once one is drawn the other becomes this much likelier, so symptoms
# cluster the way they do clinically (sleep with fatigue, low mood with worthlessness...).
AFFINITY_BOOST = 3.0
AFFINITY = tuple(tpl.COMBO) + (("ANHEDONIA", "FATIGUE"), ("SLEEP_ISSUES", "COGNITIVE_ISSUES"))
COMBO_RATE = 0.35  # share of co-occurring pairs voiced in one double-labelled sentence
EXTRA_POS = (0.22, 0.05)  # chance of a 2nd and a 3rd status-1 sentence for a symptom
NEG_POST_RATE = 0.5  # share of posts with at least one hard negative
NEG_EXTRA_MEAN = 0.35  # further hard negatives in such a post (geometric-ish)
NEG_ON_PRESENT = 0.2  # hard negative on a symptom the post has: both 0 and 1 rows
# Rare symptoms get relatively more hard negatives (weights ~ count**0.6), so their topic
# words are not a giveaway either.
NEG_WEIGHTS = tuple(REAL_COUNTS[s] ** 0.6 for s in SYMPTOMS)
PERSONA_SLOTS = ("job", "year", "subject", "pet", "place", "age", "sex", "game", "show")
INTRO_RATE, OUTRO_RATE, PARAGRAPH_RATE = 0.35, 0.45, 0.12
LENGTH_SIGMA = 0.75  # lognormal spread of post length, about that of Reddit posts
MIN_WORDS = 25
MAX_WORDS_FACTOR = 8

_SLOT = re.compile(r"\{(\w+)\}")
# Sentences that read wrongly after "Honestly, " and the like (proper nouns, set phrases).
_NO_OPENER = re.compile(r"English|Edit|Anyway|Throwaway|Thanks|Sorry|So here|Some background")
_INDEX = {label: i for i, label in enumerate(LABELS)}
_PARTNERS = tuple(
    tuple(_INDEX[y] for pair in AFFINITY for x, y in (pair, pair[::-1]) if x == label)
    for label in LABELS
)


@cache
def _label_weights() -> tuple[float, ...]:
    """Base draw weights whose exact inclusion rates match REAL_COUNTS.

    Weighted draws without replacement plus affinity boosts distort the marginals, so the
    weights are fitted by fixed-point iteration on exactly enumerated inclusion rates.
    """
    n_pos = REAL_POSTS - REAL_NONE
    target = [REAL_COUNTS[label] / n_pos for label in LABELS]
    weights = list(target)
    for _ in range(40):
        incl = _inclusion(weights)
        weights = [w * t / q for w, t, q in zip(weights, target, incl, strict=True)]
    return tuple(weights)


def _step_weights(weights, chosen_mask: int) -> list[float]:
    out = []
    for j, w in enumerate(weights):
        if chosen_mask >> j & 1:
            out.append(0.0)
            continue
        for partner in _PARTNERS[j]:
            if chosen_mask >> partner & 1:
                w *= AFFINITY_BOOST
        out.append(w)
    return out


def _inclusion(weights) -> list[float]:
    incl = [0.0] * len(LABELS)
    level = {0: 1.0}
    for pk in K_PROBS:
        nxt: dict[int, float] = defaultdict(float)
        for mask, prob in level.items():
            step = _step_weights(weights, mask)
            total = sum(step)
            for j, w in enumerate(step):
                if w:
                    nxt[mask | 1 << j] += prob * w / total
        level = nxt
        for mask, prob in level.items():
            for j in range(len(LABELS)):
                if mask >> j & 1:
                    incl[j] += pk * prob
    return incl


def _stratified(n: int, rng: random.Random) -> list[float]:
    """One uniform per post, exactly one in each 1/n stratum, in random post order.

    Driving the main draws with these (Latin hypercube style) keeps every sample size close
    to the real prevalence, not only on average: plain draws put the rare symptoms +-30% off.
    """
    order = list(range(n))
    rng.shuffle(order)
    return [(i + rng.random()) / n for i in order]


def _pick(weights, u: float) -> int:
    cum = list(accumulate(weights))
    i = bisect(cum, u * cum[-1])
    # u * total can round up to total; fall back to the last label still drawable.
    return i if i < len(cum) else max(j for j, w in enumerate(weights) if w > 0)


def _draw_labels(u_label: float, u_k: float, rng: random.Random) -> list[str]:
    p_none = REAL_NONE / REAL_POSTS
    if u_label < p_none:
        return []
    k = 1 + _pick(K_PROBS, u_k)
    weights = _label_weights()
    mask = 1 << _pick(weights, (u_label - p_none) / (1 - p_none))
    for _ in range(k - 1):
        mask |= 1 << _pick(_step_weights(weights, mask), rng.random())
    return [label for j, label in enumerate(LABELS) if mask >> j & 1]


class _Style:
    """Per-post typography, so Unicode punctuation varies between posts as on Reddit."""

    def __init__(self, rng: random.Random):
        self.curly = rng.random() < 0.35
        self.dash = rng.choice(("—", " — ", " - ", ", "))
        self.lower = rng.random() < 0.1
        self.bare_end = rng.random() < 0.15

    def apply(self, text: str) -> str:
        text = text.replace(" -- ", self.dash)
        if self.curly:
            text = text.replace("'", "’").replace("...", "…")
            while '"' in text:
                text = text.replace('"', "“", 1).replace('"', "”", 1)
        if self.lower and not re.match(r"I\b", text):
            text = text[0].lower() + text[1:]
        return text


def _fill(template: str, rng: random.Random, persona: dict[str, str]) -> str:
    def slot(match: re.Match) -> str:
        name = match.group(1)
        return persona.get(name) or rng.choice(tpl.SLOTS[name])

    return _SLOT.sub(slot, template)


def _persona(rng: random.Random) -> dict[str, str]:
    # One job, pet, age... per post, so a post doesn't contradict itself across sentences.
    return {name: rng.choice(tpl.SLOTS[name]) for name in PERSONA_SLOTS}


def _voice(
    template: str, rng: random.Random, persona: dict[str, str], opener_rate: float = 0.25
) -> str:
    body = _fill(template, rng, persona)
    if rng.random() < opener_rate and not _NO_OPENER.match(body):
        if not re.match(r"I\b", body):
            body = body[0].lower() + body[1:]
        body = rng.choice(tpl.OPENERS) + body
    return body[0].upper() + body[1:]


def _explain_pos(symptom: str, rng: random.Random) -> str:
    return (
        f"{rng.choice(tpl.EXPLAIN_LEAD)} {rng.choice(tpl.EXPLAIN_POS[symptom])}"
        f"{rng.choice(tpl.EXPLAIN_TAIL)}"
    )


def _explain_neg(symptom: str, kind: str, rng: random.Random) -> str:
    mention = rng.choice(("mentions", "touches on", "talks about"))
    return (
        f"Although the sentence {mention} {tpl.TOPIC[symptom]}, {tpl.NEG_REASON[kind]}"
        f"{rng.choice(tpl.NEG_TAIL)}"
    )


def _explain_special(desc: str, rng: random.Random) -> str:
    return f"{rng.choice(tpl.EXPLAIN_LEAD)} {desc}{rng.choice(tpl.SPECIAL_TAIL)}"


def _annotated(
    labels: list[str], rng: random.Random, persona: dict[str, str], part: tpl.Part
) -> list[tuple[str, list[tuple]]]:
    """The post's annotated sentences: (raw text, [(symptom, status, explanation)])."""
    out: dict[str, list[tuple]] = {}  # text -> rows; keyed so no sentence repeats in a post

    def add(template: str, rows: list[tuple]) -> None:
        for _ in range(5):
            text = _voice(template, rng, persona)
            if text not in out:
                out[text] = rows
                return

    present = set(labels)
    combined: set[str] = set()
    for a, b in part.combo:
        if a in present and b in present and not {a, b} & combined and rng.random() < COMBO_RATE:
            combined |= {a, b}
            add(rng.choice(part.combo[a, b]), [(s, 1, _explain_pos(s, rng)) for s in (a, b)])
    for label in labels:
        if label == SPECIAL_CASE:
            desc, template = rng.choice(tpl.SPECIAL)
            add(template, [(label, 1, _explain_special(desc, rng))])
            continue
        n = (label not in combined) + sum(rng.random() < p for p in EXTRA_POS)
        # A held-out list can be shorter than the up to 3 sentences asked for.
        for template in rng.sample(part.pos[label], min(n, len(part.pos[label]))):
            add(template, [(label, 1, _explain_pos(label, rng))])
    if rng.random() < NEG_POST_RATE:
        n_neg = 1
        while rng.random() < NEG_EXTRA_MEAN / (1 + NEG_EXTRA_MEAN):
            n_neg += 1
        for _ in range(n_neg):
            symptom = _neg_topic(present, rng)
            kind, template = rng.choice(part.neg[symptom])
            add(template, [(symptom, 0, _explain_neg(symptom, kind, rng))])
    return list(out.items())


def _neg_topic(present: set[str], rng: random.Random) -> str:
    on_present = [s for s in SYMPTOMS if s in present]
    if on_present and rng.random() < NEG_ON_PRESENT:
        return rng.choice(on_present)
    pool = [(s, w) for s, w in zip(SYMPTOMS, NEG_WEIGHTS, strict=True) if s not in present]
    return rng.choices([s for s, _ in pool], weights=[w for _, w in pool])[0]


@cache
def _length_mu(mean_words: float) -> float:
    """Lognormal location whose clipped mean is mean_words (clipping shifts the mean)."""
    lo, hi = min(MIN_WORDS, mean_words), MAX_WORDS_FACTOR * mean_words
    s = LENGTH_SIGMA

    def clipped_mean(mu: float) -> float:
        def phi(z: float) -> float:
            return 0.5 * (1 + math.erf(z / math.sqrt(2)))

        a, b = (math.log(lo) - mu) / s, (math.log(hi) - mu) / s
        body = math.exp(mu + s * s / 2) * (phi(b - s) - phi(a - s))
        return lo * phi(a) + hi * (1 - phi(b)) + body

    left, right = math.log(lo) - 5 * s, math.log(hi) + 5 * s
    for _ in range(80):
        mid = (left + right) / 2
        left, right = (mid, right) if clipped_mean(mid) < mean_words else (left, mid)
    return (left + right) / 2


def _post_text(
    annotated: list[tuple[str, list[tuple]]],
    target: int,
    rng: random.Random,
    persona: dict[str, str],
) -> tuple[str, list[tuple[int, str, list[tuple]]]]:
    style = _Style(rng)

    def render(template: str, opener_rate: float = 0.0) -> str:
        return style.apply(_voice(template, rng, persona, opener_rate))

    intro = [render(rng.choice(tpl.FILLER_INTRO))] if rng.random() < INTRO_RATE else []
    outro = [render(rng.choice(tpl.FILLER_OUTRO))] if rng.random() < OUTRO_RATE else []
    body: list[tuple[str, list[tuple]]] = [(style.apply(t), rows) for t, rows in annotated]
    seen = {text for text, _ in body} | set(intro) | set(outro)
    words = sum(len(text.split()) for text in seen)
    floor = min(MIN_WORDS, target)
    deck: list[str] = []
    for _ in range(10 * target + 10):  # bounded: duplicate draws are skipped
        if words >= target:
            break
        if not deck:  # a shuffled deck: every template once before any repeats
            deck = rng.sample(tpl.FILLER, len(tpl.FILLER))
        text = render(deck.pop(), opener_rate=0.08)
        n = len(text.split())
        if text in seen:
            continue
        # Stop short when this sentence would overshoot more than stopping undershoots, so
        # the realised mean stays on target instead of drifting upward.
        if words >= floor and words + n - target > target - words:
            break
        seen.add(text)
        body.append((text, []))
        words += n
    rng.shuffle(body)
    pieces = [(text, []) for text in intro] + body + [(text, []) for text in outro]
    spans = [(i, text, rows) for i, (text, rows) in enumerate(pieces) if rows]
    joined = pieces[0][0]
    for text, _ in pieces[1:]:
        joined += ("\n\n" if rng.random() < PARAGRAPH_RATE else " ") + text
    # Only the final sentence may lose its full stop: mid-text run-ons would break the
    # sentence splitting that downstream code relies on.
    if style.bare_end and not pieces[-1][1] and joined.endswith("."):
        joined = joined[:-1]
    return joined, spans


def _post_ids(n_posts: int, rng: random.Random) -> list[str]:
    # Real ids are s_<author>_<n>, authors often posting more than once.
    n_authors = max(50, n_posts // 2)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n_posts:
        post_id = f"s_{rng.randint(1, 3 * n_authors)}_{rng.randint(1, max(1200, n_posts))}"
        if post_id not in seen:
            seen.add(post_id)
            ids.append(post_id)
    return ids


def generate(
    n_posts: int, seed: int, mean_words: int = 295, templates: str = "seen"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (posts, annotations) DataFrames in the ReDSM5 column layout.

    Deterministic per seed. Every annotated ``sentence_text`` is a sentence of its post.
    ``templates``: symptom sentences from the ``"seen"`` part the bundled sample uses, the
    ``"heldout"`` part it never uses (unseen wording) or ``"all"`` (synth_templates.part).
    """
    part = tpl.part(templates)
    if n_posts < 0:
        raise ValueError(f"n_posts must be >= 0, got {n_posts}")
    if mean_words < 5:
        raise ValueError(f"mean_words must be >= 5, got {mean_words}")
    rng = random.Random(seed)
    mu = _length_mu(float(mean_words))
    lo, hi = min(MIN_WORDS, mean_words), MAX_WORDS_FACTOR * mean_words
    posts, annotations = [], []
    ids = _post_ids(n_posts, rng)
    u_label, u_k = _stratified(n_posts, rng), _stratified(n_posts, rng)
    for post_id, u1, u2 in zip(ids, u_label, u_k, strict=True):
        labels, persona = _draw_labels(u1, u2, rng), _persona(rng)
        target = round(min(max(rng.lognormvariate(mu, LENGTH_SIGMA), lo), hi))
        text, spans = _post_text(_annotated(labels, rng, persona, part), target, rng, persona)
        posts.append((post_id, text))
        for index, sentence, rows in spans:
            sentence_id = f"{post_id}_{index}"
            for symptom, status, explanation in sorted(rows, key=lambda r: _INDEX[r[0]]):
                annotations.append((post_id, sentence_id, sentence, symptom, status, explanation))
    posts_df = pd.DataFrame(posts, columns=list(POST_COLUMNS))
    ann_df = pd.DataFrame(annotations, columns=list(ANNOTATION_COLUMNS))
    ann_df["status"] = ann_df["status"].astype("int64")
    return posts_df, ann_df


def write(
    out_dir: str | Path,
    n_posts: int,
    seed: int,
    mean_words: int = 295,
    *,
    overwrite: bool = False,
    templates: str = "seen",
) -> tuple[Path, Path]:
    """Generate and write both CSVs into out_dir; return (posts_path, annotations_path).

    Refuses to replace an existing CSV unless overwrite=True, checking both files before
    writing either so a refusal never leaves a half-updated pair.
    """
    out = Path(out_dir)
    paths = (out / POSTS_FILE, out / ANNOTATIONS_FILE)
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    posts, annotations = generate(n_posts, seed, mean_words, templates)
    out.mkdir(parents=True, exist_ok=True)
    # Fixed line terminator: the same seed gives byte-identical files on every platform.
    for frame, path in zip((posts, annotations), paths, strict=True):
        frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    return paths
