"""Scoring posts: every unit x the 9 criteria through the model, aggregated to the post.

Whatever the pairing, the model's output becomes one logit per (unit, criterion): `nli`
runs a pass per pair (logit = matched - unmatched class logit), `multilabel` a pass per
unit whose head gives all 9 criteria's logits at once. Aggregation, calibration and the
evidence table see only these unit logits.

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

from nli_tune.model.aggregate import aggregate, top_units
from nli_tune.model.precision import autocast
from nli_tune.pairs.encoding import UnitData, collate, pair_lengths, sorted_batches
from nli_tune.redsm5.load import n_criteria


@dataclass
class PostScores:
    logits: np.ndarray  # float64 [P, 9]: aggregated unit logits
    top_unit: np.ndarray  # int64 [P, 9]: index (into the UnitData) of the best unit


def _run(model: nn.Module, data: UnitData, units, crits, device, amp):
    """(head output, attention, real tokens) of one padded batch of pairs."""
    pairing = getattr(model, "pairing", "nli")
    if pairing != data.pairing:
        raise ValueError(f"model pairing {pairing!r} but units assembled for {data.pairing!r}")
    batch = {k: v.to(device) for k, v in collate(data, units, crits).items()}
    with autocast(device, amp):
        # The pooler reduces the unit's tokens (read in the criterion's context), not the
        # criterion's own, which are the same for every unit (CV macro-F1 0.64 -> 0.68).
        logits, attention = model.score(
            batch["input_ids"], batch["attention_mask"], batch["unit_mask"], batch.get("states")
        )
    return logits.float(), attention.float(), int(batch["attention_mask"].sum())


def forward_units(model, data: UnitData, units: np.ndarray, device, amp):
    """multilabel: (logits [U, 9], attention [U, 9], real tokens), one pass per unit."""
    return _run(model, data, units, np.zeros(len(units), np.int64), device, amp)


def forward_pairs(
    model: nn.Module,
    data: UnitData,
    units: np.ndarray,
    crits: np.ndarray,
    device: torch.device,
    amp: torch.dtype | None,
):
    """(unit logit [B], attention score [B], real tokens) of each (unit, criterion) pair.
    multilabel runs each distinct unit once and picks its criterion's logit."""
    if data.pairing == "multilabel":
        distinct, row = np.unique(units, return_inverse=True)
        logits, attention, tokens = forward_units(model, data, distinct, device, amp)
        at = (torch.from_numpy(row).to(logits.device), torch.from_numpy(crits).to(logits.device))
        return logits[at], attention[at], tokens
    logits, attention, tokens = _run(model, data, units, crits, device, amp)
    return logits[:, 1] - logits[:, 0], attention, tokens


def unit_criterion_pairs(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit, criterion) index arrays of every unit x every criterion, unit-major."""
    c = n_criteria()
    return np.repeat(units, c), np.tile(np.arange(c), len(units))


def _unit_logits(model, data, units, batch_size, device, amp):
    """(logit, attention) [len(units) * criteria], unit-major: every unit x criterion."""
    c = n_criteria()
    logit = torch.zeros(len(units), c)
    attention = torch.zeros(len(units), c)
    if data.pairing == "multilabel":  # a pass per unit: batch_size units per forward
        for idx in sorted_batches(data.lengths[units], batch_size):
            out, att, _ = forward_units(model, data, units[idx], device, amp)
            logit[idx], attention[idx] = out.cpu(), att.cpu()
        return logit.reshape(-1), attention.reshape(-1)
    logit, attention = logit.reshape(-1), attention.reshape(-1)
    pair_units, pair_crits = unit_criterion_pairs(units)
    lengths = pair_lengths(data, pair_units, pair_crits)
    for idx in sorted_batches(lengths, batch_size):
        out, att, _ = forward_pairs(model, data, pair_units[idx], pair_crits[idx], device, amp)
        logit[idx], attention[idx] = out.cpu(), att.cpu()
    return logit, attention


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
    with model.merged():
        logit, attention = _unit_logits(model, data, units, batch_size, device, amp)
    c = n_criteria()
    pair_units, pair_crits = unit_criterion_pairs(units)
    bags = torch.from_numpy(data.post_index[pair_units] * c + pair_crits)
    n_bags = len(data.posts) * c
    post_logit = aggregate(how, logit, bags, n_bags, attention, topk)
    top = top_units(logit, bags, n_bags).numpy()
    return PostScores(
        logits=post_logit.double().numpy().reshape(-1, c),
        top_unit=pair_units[np.minimum(top, len(pair_units) - 1)].reshape(-1, c),
    )


@torch.no_grad()
def score_ensemble(model, members, data: UnitData, how, topk, batch_size, device, amp):
    """A fold ensemble's PostScores (model/ensemble.py): each member's trainable state
    loaded in turn into `model`; `logits` are the logit of the members' mean calibrated
    probability (`ensemble_calibration` decides on them) and the evidence unit is the one
    with the highest mean calibrated score."""
    from nli_tune.evaluation.baselines import logit as logit_of  # sklearn: where ensembles score
    from nli_tune.model.classifier import load_trainable

    model.eval()
    units = np.flatnonzero(~data.external)
    c = n_criteria()
    pair_units, pair_crits = unit_criterion_pairs(units)
    bags = torch.from_numpy(data.post_index[pair_units] * c + pair_crits)
    n_bags = len(data.posts) * c
    post_prob, unit_prob = np.zeros(n_bags), np.zeros(len(pair_units))
    for state, calibration in members:
        load_trainable(model, state)
        with model.merged():
            logit, attention = _unit_logits(model, data, units, batch_size, device, amp)
        post_logit = aggregate(how, logit, bags, n_bags, attention, topk)
        post_prob += calibration.prob(post_logit.double().numpy()) / len(members)
        unit_prob += calibration.prob(logit.double().numpy()) / len(members)
    top = top_units(torch.from_numpy(logit_of(unit_prob)), bags, n_bags).numpy()
    return PostScores(
        logits=logit_of(post_prob).reshape(-1, c),
        top_unit=pair_units[np.minimum(top, len(pair_units) - 1)].reshape(-1, c),
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
