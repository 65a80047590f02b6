"""(unit, criterion) pair tokens and length-bucketed, dynamically padded batches.

A pair is `[bos] hypothesis [sep] unit [eos]` (`criterion_first`, the default) or
`[bos] unit [sep] hypothesis [eos]` (`post_first`, NLI's premise then hypothesis); the
hypothesis is the criterion's description or its short name (`hypothesis`). With
`pairing: multilabel` there is no hypothesis: the model reads `[bos] unit [eos]` once and
gives all 9 criteria's logits, so a "pair" is the unit alone whatever its criterion.

A unit is a sentence, a window of sentences or the whole post (see units/evidence.py). Each unit
is tokenized once, with its tokens' character offsets, and paired with the 9 criteria only
when a batch is built. A unit too long for `max_length` is split
into consecutive token windows, so nothing is truncated away; only the whole-post ablation
is cut (its end), as the seed design did. Padding goes on the right (Gemma's tokenizer pads
left).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from nli_tune.core.config import HYPOTHESES, PAIR_ORDERS, PAIRINGS
from nli_tune.core.errors import UserError
from nli_tune.redsm5.load import criteria, criterion_keys, n_criteria
from nli_tune.units.evidence import LocationReport, UnitTable, build_units

# Plain-text separators: the pretrained LM reads them as section breaks.
SEPARATOR = "\n\nPost: "  # criterion_first: between the criterion and the unit
POST_FIRST_SEPARATOR = "\n\nCriterion: "  # post_first: between the unit and the criterion


@dataclass(frozen=True)
class PairFormat:
    """Token ids of the criteria and separators: a pair is head(c) + unit + tail(c)."""

    criteria: tuple[tuple[int, ...], ...]  # ids of each criterion description, DSM order
    names: tuple[tuple[int, ...], ...]  # ids of each criterion's short name, DSM order
    bos: tuple[int, ...]
    sep: tuple[int, ...]  # criterion_first: between criterion and unit
    sep_post_first: tuple[int, ...]  # post_first: between unit and criterion
    eos: tuple[int, ...]
    pad: int  # pad token id: workers collate with it without loading a tokenizer

    def hypothesis(self, c: int, kind: str) -> tuple[int, ...]:
        """Criterion c's hypothesis ids: its description or its name. Both travel in one
        format, so the search's trials can each pick their own."""
        if kind not in HYPOTHESES:
            raise ValueError(f"unknown hypothesis {kind!r}")
        return (self.criteria if kind == "description" else self.names)[c]

    def head_tail(
        self, c: int, order: str, hypothesis: str = "description", pairing: str = "nli"
    ) -> tuple[list[int], list[int]]:
        if pairing == "multilabel":  # the unit alone: one pass scores every criterion
            return [*self.bos], [*self.eos]
        h = self.hypothesis(c, hypothesis)
        if order == "criterion_first":
            return [*self.bos, *h, *self.sep], [*self.eos]
        return [*self.bos], [*self.sep_post_first, *h, *self.eos]

    def overhead(
        self, order: str, hypothesis: str = "description", pairing: str = "nli"
    ) -> np.ndarray:
        """Tokens a pair adds around its unit, per criterion."""
        return np.array(
            [
                sum(map(len, self.head_tail(c, order, hypothesis, pairing)))
                for c in range(n_criteria())
            ]
        )

    def min_length(self) -> int:
        """Shortest max_length that fits every criterion plus 8 unit tokens, in either order
        and with either hypothesis (a search may sample any of them)."""
        sep = max(len(self.sep), len(self.sep_post_first))
        longest = max(map(len, self.criteria + self.names))
        return len(self.bos) + sep + longest + len(self.eos) + 8


@dataclass(frozen=True)
class UnitTokens:
    """Every unit tokenized once (shared with search workers), before pairing."""

    ids: list[np.ndarray]  # int32 token ids of each unit, no special tokens
    offsets: list[np.ndarray]  # int64 [len, 2]: each token's character span in the post


def pair_format(tokenizer) -> PairFormat:
    def ids(text: str) -> tuple[int, ...]:
        return tuple(tokenizer.encode(text, add_special_tokens=False))

    return PairFormat(
        criteria=tuple(ids(c.description) for c in criteria()),
        names=tuple(ids(c.name) for c in criteria()),
        bos=(tokenizer.bos_token_id,) if tokenizer.bos_token_id is not None else (),
        sep=ids(SEPARATOR),
        sep_post_first=ids(POST_FIRST_SEPARATOR),
        eos=(tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else (),
        pad=tokenizer.pad_token_id,
    )


def tokenize_units(tokenizer, table: UnitTable) -> UnitTokens:
    """Token ids and post-relative character offsets of every unit of `table`."""
    enc = tokenizer(
        table.texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    ids, offsets = [], []
    for i, (tok, off) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        base = max(int(table.starts[i]), 0)
        ids.append(np.asarray(tok, np.int32))
        offsets.append(np.asarray(off, np.int64).reshape(-1, 2) + base)
    return UnitTokens(ids, offsets)


@dataclass(frozen=True)
class UnitData:
    """A set of posts as the trainer sees it: units as token ids, with their posts, spans
    and evidence labels, plus each post's 9 criterion labels."""

    ids: list[np.ndarray]  # int32 token ids per unit (split to fit max_length)
    post_index: np.ndarray  # int64 [n]: the unit's row in `posts`
    starts: np.ndarray  # int64 [n]: character span in the post; -1 for external units
    ends: np.ndarray
    evidence: np.ndarray  # int8 [n, 9]: 1 / 0 / -1 unknown
    hard: np.ndarray  # bool [n, 9]: explicit annotated absence
    annotated: np.ndarray  # bool [n, 9]: overlaps a located evidence sentence
    posts: np.ndarray  # object [P]: post ids
    post_labels: np.ndarray  # int64 [P, 9]: 1 = matched
    fmt: PairFormat
    order: str  # criterion_first | post_first
    unit: str  # post | sentence | window
    hypothesis: str = "description"  # description | name: the criterion text in a pair
    pairing: str = "nli"  # nli | multilabel: a pass per (unit, criterion) or per unit
    # multilabel with frozen bottom layers: each unit's hidden states entering the first
    # adapted layer, float32 [tokens, hidden] (model/prefix.py); None: run the whole model.
    prefix: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def with_prefix(self, states: list[np.ndarray]) -> UnitData:
        if len(states) != len(self.ids):
            raise ValueError(f"{len(states)} prefix states for {len(self.ids)} units")
        return replace(self, prefix=states)

    def head_tail(self, c: int) -> tuple[list[int], list[int]]:
        """Tokens around a unit in its pair with criterion c."""
        return self.fmt.head_tail(c, self.order, self.hypothesis, self.pairing)

    def overhead(self) -> np.ndarray:
        """Tokens a pair adds around its unit, per criterion."""
        return self.fmt.overhead(self.order, self.hypothesis, self.pairing)

    @property
    def external(self) -> np.ndarray:
        return self.starts < 0

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), int, count=len(self.ids))

    def subset(self, posts) -> UnitData:
        keep_posts = np.flatnonzero(np.isin(self.posts, np.asarray(list(posts), dtype=object)))
        new_index = np.full(len(self.posts), -1)
        new_index[keep_posts] = np.arange(len(keep_posts))
        keep = np.flatnonzero(new_index[self.post_index] >= 0)
        return replace(
            self,
            ids=[self.ids[i] for i in keep],
            post_index=new_index[self.post_index[keep]],
            starts=self.starts[keep],
            ends=self.ends[keep],
            evidence=self.evidence[keep],
            hard=self.hard[keep],
            annotated=self.annotated[keep],
            posts=self.posts[keep_posts],
            post_labels=self.post_labels[keep_posts],
            prefix=None if self.prefix is None else [self.prefix[i] for i in keep],
        )

    def pairs_frame(self) -> pd.DataFrame:
        """post_id, criterion, label: one row per (post, criterion), posts in order."""
        keys = np.array(criterion_keys(), dtype=object)
        return pd.DataFrame(
            {
                "post_id": np.repeat(self.posts, len(keys)),
                "criterion": np.tile(keys, len(self.posts)),
                "label": self.post_labels.reshape(-1),
            }
        )


def assemble(
    table: UnitTable,
    tokens: UnitTokens,
    fmt: PairFormat,
    pairs: pd.DataFrame,
    max_length: int,
    order: str,
    unit: str,
    hypothesis: str = "description",
    pairing: str = "nli",
) -> UnitData:
    """Units ready for pairing: a unit longer than max_length allows (after its hypothesis,
    if any) is split into token windows (the whole-post ablation is cut instead); posts and
    labels come from `pairs`."""
    if max_length < fmt.min_length():
        raise UserError(
            f"max_length {max_length}: too short; the longest criterion and separators need "
            f"{fmt.min_length() - 8} tokens plus room for the unit (use >= {fmt.min_length()})"
        )
    if order not in PAIR_ORDERS:
        raise ValueError(f"unknown pair order {order!r}")
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}")
    budget = max_length - int(fmt.overhead(order, hypothesis, pairing).max())
    posts = np.asarray(list(dict.fromkeys(pairs["post_id"])), dtype=object)
    row = {p: i for i, p in enumerate(posts)}
    labels = np.zeros((len(posts), n_criteria()), np.int64)
    col = {k: i for i, k in enumerate(criterion_keys())}
    for pid, crit, label in zip(pairs["post_id"], pairs["criterion"], pairs["label"], strict=True):
        labels[row[pid], col[crit]] = label
    ids, index, starts, ends, keep = [], [], [], [], []
    for i, pid in enumerate(table.post_ids):
        if pid not in row:
            continue
        tok, off = tokens.ids[i], tokens.offsets[i]
        cuts = range(0, max(len(tok), 1), budget) if unit != "post" else [0]
        for j, cut in enumerate(cuts):
            piece = tok[cut : cut + budget]
            ids.append(piece)
            index.append(row[pid])
            keep.append(i)
            if table.starts[i] < 0 or len(cuts) == 1:
                starts.append(table.starts[i])
                ends.append(table.ends[i])
            else:  # split unit: each window spans from its first token to the next window
                starts.append(table.starts[i] if j == 0 else off[cut, 0])
                last = j == len(cuts) - 1
                ends.append(table.ends[i] if last else off[cut + budget, 0])
    keep_arr = np.asarray(keep, dtype=np.int64)
    return UnitData(
        ids=ids,
        post_index=np.asarray(index, np.int64),
        starts=np.asarray(starts, np.int64),
        ends=np.asarray(ends, np.int64),
        evidence=table.evidence[keep_arr],
        hard=table.hard[keep_arr],
        annotated=table.annotated[keep_arr],
        posts=posts,
        post_labels=labels,
        fmt=fmt,
        order=order,
        unit=unit,
        hypothesis=hypothesis,
        pairing=pairing,
    )


@dataclass(frozen=True)
class EncodedUnits:
    """A ReDSM5 set cut into units, its evidence located and its units tokenized: what is
    done once per set and tokenizer, before pairs are assembled for a config."""

    table: UnitTable
    tokens: UnitTokens
    fmt: PairFormat
    report: LocationReport  # how many annotations were found in their posts

    def assemble(self, cfg, pairs) -> UnitData:
        """The trainer's UnitData for `pairs` (post_id, criterion, label) under `cfg`."""
        return assemble_for(cfg, self.table, self.tokens, self.fmt, pairs)


def encode(tokenizer, data, cfg) -> EncodedUnits:
    """Segment `data` into `cfg`'s units, locate the evidence, tokenize every unit once."""
    table, report = build_units(data, cfg.unit, cfg.window_sentences, cfg.window_stride)
    return EncodedUnits(table, tokenize_units(tokenizer, table), pair_format(tokenizer), report)


def encode_units(tokenizer, data, cfg) -> UnitData:
    """A ReDSM5 set's units under `cfg` (unit kind, windows, max_length, pair order,
    hypothesis, pairing), ready for the trainer: segment, locate evidence, tokenize, assemble."""
    return encode(tokenizer, data, cfg).assemble(cfg, data.pairs())


def assemble_for(cfg, table: UnitTable, tokens: UnitTokens, fmt: PairFormat, pairs) -> UnitData:
    """`assemble` with every pairing setting taken from the training config `cfg`."""
    return assemble(
        table, tokens, fmt, pairs, cfg.max_length, cfg.pair_order, cfg.unit,
        cfg.hypothesis, cfg.pairing,
    )  # fmt: skip


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 32
) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples, so dynamic padding wastes little.

    Examples are shuffled, cut into pools of `pool_batches` batches, sorted by length inside
    each pool and batched; the batch order is then shuffled again.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic batches for scoring: sorted by length, no shuffling."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pair_lengths(data: UnitData, units: np.ndarray, crits: np.ndarray) -> np.ndarray:
    return data.lengths[units] + data.overhead()[crits]


def collate(data: UnitData, units: np.ndarray, crits: np.ndarray) -> dict[str, torch.Tensor]:
    """Right-pad the (unit, criterion) pairs of a batch to their own longest pair."""
    seqs, unit_at = [], []
    for u, c in zip(units, crits, strict=True):
        head, tail = data.head_tail(int(c))
        seqs.append(head + data.ids[u].tolist() + tail)
        unit_at.append((len(head), len(head) + len(data.ids[u])))
    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), data.fmt.pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    unit_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (seq, (start, end)) in enumerate(zip(seqs, unit_at, strict=True)):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        unit_mask[row, start : max(end, start + 1)] = 1  # an empty unit pools its separator
    batch = {"input_ids": input_ids, "attention_mask": mask, "unit_mask": unit_mask}
    if data.prefix is not None:  # the cached bottom-layer states, padded like the ids
        hidden = data.prefix[units[0]].shape[1]
        states = torch.zeros((len(seqs), width, hidden), dtype=torch.float32)
        for row, u in enumerate(units):
            states[row, : len(seqs[row])] = torch.from_numpy(data.prefix[u])
        batch["states"] = states
    return batch
