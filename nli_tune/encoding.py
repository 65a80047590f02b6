"""Pair tokenization and length-bucketed, dynamically padded batches.

A pair is `[bos] criterion-description [sep] post [eos]` (`criterion_first`, the default)
or `[bos] post [sep] criterion-description [eos]` (`post_first`, NLI's premise then
hypothesis). With bidirectional attention both orders see everything; they differ in
what the causally pre-trained layers expect, which is why the order is a config key.
Each post is tokenized once and reused for its 9 pairs; when a pair is too long only the
post is cut (its end), never the criterion. Padding goes on the right (Gemma's tokenizer
pads left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from nli_tune.config import PAIR_ORDERS
from nli_tune.data import criteria
from nli_tune.errors import UserError

# Plain-text separators: the pretrained LM reads them as section breaks.
SEPARATOR = "\n\nPost: "  # criterion_first: between the criterion and the post
POST_FIRST_SEPARATOR = "\n\nCriterion: "  # post_first: between the post and the criterion


@dataclass(frozen=True)
class EncodedPairs:
    input_ids: list[np.ndarray]  # int32 token ids per pair, unpadded
    labels: np.ndarray  # int64, 1 = matched
    post_ids: np.ndarray  # object, the pair's post
    criteria: np.ndarray  # object, the pair's criterion key

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), int, count=len(self.input_ids))

    def subset(self, posts) -> EncodedPairs:
        keep = np.flatnonzero(np.isin(self.post_ids, np.asarray(list(posts), dtype=object)))
        return EncodedPairs(
            [self.input_ids[i] for i in keep],
            self.labels[keep],
            self.post_ids[keep],
            self.criteria[keep],
        )


@dataclass(frozen=True)
class PairTokens:
    """Token ids of every post and criterion, before pairing: tokenized once per data set
    and shared (e.g. with search workers), then assembled per max_length."""

    posts: dict[str, list[int]]  # post_id -> ids of the post text, no special tokens
    criteria: dict[str, list[int]]  # criterion key -> ids of its description
    bos: list[int]
    sep: list[int]  # between criterion and post (criterion_first)
    sep_post_first: list[int]  # between post and criterion (post_first)
    eos: list[int]
    pad: int  # pad token id: workers collate with it without loading a tokenizer

    def min_length(self) -> int:
        """Shortest max_length that fits every criterion plus 8 post tokens (either order)."""
        longest = max(len(ids) for ids in self.criteria.values())
        sep = max(len(self.sep), len(self.sep_post_first))
        return len(self.bos) + sep + longest + len(self.eos) + 8


def tokenize(tokenizer, texts: dict[str, str]) -> PairTokens:
    """Tokenize every post once (`texts` maps post_id -> text) and every criterion."""
    post_list = list(texts)
    encoded = tokenizer([texts[p] for p in post_list], add_special_tokens=False, verbose=False)[
        "input_ids"
    ]
    return PairTokens(
        posts=dict(zip(post_list, encoded, strict=True)),
        criteria={
            c.key: tokenizer.encode(c.description, add_special_tokens=False) for c in criteria()
        },
        bos=[tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [],
        sep=tokenizer.encode(SEPARATOR, add_special_tokens=False),
        sep_post_first=tokenizer.encode(POST_FIRST_SEPARATOR, add_special_tokens=False),
        eos=[tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [],
        pad=tokenizer.pad_token_id,
    )


def assemble(
    tokens: PairTokens, pairs: pd.DataFrame, max_length: int, order: str = "criterion_first"
) -> EncodedPairs:
    """One token sequence per pair in `order`, cutting only the post to max_length."""
    if max_length < tokens.min_length():
        raise UserError(
            f"max_length {max_length}: too short; the longest criterion and separators need "
            f"{tokens.min_length() - 8} tokens plus room for the post (use >= "
            f"{tokens.min_length()})"
        )
    if order not in PAIR_ORDERS:
        raise ValueError(f"unknown pair order {order!r}")
    ids = []
    for pid, crit in zip(pairs["post_id"], pairs["criterion"], strict=True):
        if order == "criterion_first":
            head, tail = tokens.bos + tokens.criteria[crit] + tokens.sep, tokens.eos
        else:
            head, tail = tokens.bos, tokens.sep_post_first + tokens.criteria[crit] + tokens.eos
        post = tokens.posts[pid][: max_length - len(head) - len(tail)]
        ids.append(np.asarray(head + post + tail, dtype=np.int32))
    return EncodedPairs(
        ids,
        pairs["label"].to_numpy(np.int64),
        pairs["post_id"].to_numpy(object),
        pairs["criterion"].to_numpy(object),
    )


def encode_pairs(
    tokenizer,
    texts: dict[str, str],
    pairs: pd.DataFrame,
    max_length: int,
    order: str = "criterion_first",
) -> EncodedPairs:
    """Tokenize and assemble in one go (texts maps post_id -> text)."""
    needed = dict.fromkeys(pairs["post_id"])
    tokens = tokenize(tokenizer, {p: texts[p] for p in needed})
    return assemble(tokens, pairs, max_length, order)


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 32
) -> list[np.ndarray]:
    """Shuffled batches of similar-length pairs, so dynamic padding wastes little.

    Pairs are shuffled, cut into pools of `pool_batches` batches, sorted by length inside
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


def collate(enc: EncodedPairs, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its own longest pair."""
    width = max(len(enc.input_ids[i]) for i in idx)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq = torch.from_numpy(enc.input_ids[i].astype(np.int64))
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": torch.from_numpy(enc.labels[idx]),
    }
