"""Pair tokenization and length-bucketed, dynamically padded batches.

A pair is `[bos] post [sep] criterion-description [eos]`. Each post is tokenized once and
reused for its 9 pairs; when a pair is too long only the post is cut, never the criterion.
Padding goes on the right (Gemma's tokenizer pads left by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from nli_tune.data import criteria
from nli_tune.errors import UserError

SEPARATOR = "\n\nCriterion: "  # plain text: the pretrained LM reads it as a section break


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


def encode_pairs(
    tokenizer, texts: dict[str, str], pairs: pd.DataFrame, max_length: int
) -> EncodedPairs:
    """Tokenize (post, criterion) pairs; `texts` maps post_id -> text."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sep = tokenizer.encode(SEPARATOR, add_special_tokens=False)
    crit_ids = {
        c.key: tokenizer.encode(c.description, add_special_tokens=False) for c in criteria()
    }
    longest_tail = max(len(ids) for ids in crit_ids.values()) + len(sep) + len(eos)
    if max_length < len(bos) + longest_tail + 8:
        raise UserError(
            f"max_length {max_length}: too short; the longest criterion needs "
            f"{len(bos) + longest_tail} tokens plus room for the post (use >= "
            f"{len(bos) + longest_tail + 8})"
        )
    post_list = list(dict.fromkeys(pairs["post_id"]))
    encoded = tokenizer([texts[p] for p in post_list], add_special_tokens=False)["input_ids"]
    post_ids = dict(zip(post_list, encoded, strict=True))
    ids = []
    for pid, crit in zip(pairs["post_id"], pairs["criterion"], strict=True):
        tail = sep + crit_ids[crit] + eos
        budget = max_length - len(bos) - len(tail)
        ids.append(np.asarray(bos + post_ids[pid][:budget] + tail, dtype=np.int32))
    return EncodedPairs(
        ids,
        pairs["label"].to_numpy(np.int64),
        pairs["post_id"].to_numpy(object),
        pairs["criterion"].to_numpy(object),
    )


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
