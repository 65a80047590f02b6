"""Scoring posts: every unit x the 9 criteria through the model, aggregated to the post.

Shared by the fold trainer (validation and calibration posts each epoch), `train` (the test
posts) and `predict` (new posts). The table it returns names each (post, criterion)'s
evidence unit by its number in the post and its character span, never by its text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from nli_tune.aggregate import aggregate, top_units
from nli_tune.encoding import UnitData, collate, pair_lengths, sorted_batches


@dataclass
class PostScores:
    logits: np.ndarray  # float64 [P, 9]: aggregated unit logits
    top_unit: np.ndarray  # int64 [P, 9]: index (into the UnitData) of the best unit


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def forward_pairs(
    model: nn.Module,
    data: UnitData,
    units: np.ndarray,
    crits: np.ndarray,
    device: torch.device,
    amp: torch.dtype | None,
):
    """(unit logit = matched - unmatched class logit, attention score, real tokens)."""
    batch = {k: v.to(device) for k, v in collate(data, units, crits).items()}
    with autocast(device, amp):
        # The pooler reduces the unit's tokens (read in the criterion's context), not the
        # criterion's own, which are the same for every unit (CV macro-F1 0.64 -> 0.68).
        logits, attention = model.score(
            batch["input_ids"], batch["attention_mask"], batch["unit_mask"]
        )
    return logits.float(), attention.float(), int(batch["attention_mask"].sum())


@torch.no_grad()
def score_posts(
    model: nn.Module,
    data: UnitData,
    how: str,
    topk: int,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> PostScores:
    """Aggregated logit (`how`: max | lse | topk | attention) and best unit of every
    (post, criterion) of `data`: all its scored units x 9 criteria, in length-sorted
    batches, through the merged adapters."""
    model.eval()
    units = np.flatnonzero(~data.external)
    pair_units, pair_crits = np.repeat(units, 9), np.tile(np.arange(9), len(units))
    logit = torch.zeros(len(pair_units))
    attention = torch.zeros(len(pair_units))
    lengths = pair_lengths(data, pair_units, pair_crits)
    with model.merged():
        for idx in sorted_batches(lengths, batch_size):
            out, att, _ = forward_pairs(model, data, pair_units[idx], pair_crits[idx], device, amp)
            logit[idx] = (out[:, 1] - out[:, 0]).cpu()
            attention[idx] = att.cpu()
    bags = torch.from_numpy(data.post_index[pair_units] * 9 + pair_crits)
    n_bags = len(data.posts) * 9
    post_logit = aggregate(how, logit, bags, n_bags, attention, topk)
    top = top_units(logit, bags, n_bags).numpy()
    return PostScores(
        logits=post_logit.double().numpy().reshape(-1, 9),
        top_unit=pair_units[np.minimum(top, len(pair_units) - 1)].reshape(-1, 9),
    )


def evidence_table(
    data: UnitData, scored: PostScores, scores: np.ndarray, decisions: np.ndarray
) -> pd.DataFrame:
    """Per (post, criterion): label, the calibrated score, the decision and the evidence unit
    shown for it: its number among the post's units and its character span in the post
    (never its text)."""
    number = np.zeros(len(data), np.int64)  # a unit's position among its post's units
    seen: dict[int, int] = {}
    for u in np.flatnonzero(~data.external):
        post = int(data.post_index[u])
        number[u] = seen.get(post, 0)
        seen[post] = number[u] + 1
    top = scored.top_unit.ravel()
    frame = data.pairs_frame()
    return frame.assign(
        score=np.asarray(scores).ravel().round(6),
        decision=np.asarray(decisions).ravel().astype(int),
        evidence_unit=number[top],
        evidence_start=data.starts[top],
        evidence_end=data.ends[top],
    )
