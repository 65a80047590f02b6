"""Unit scores -> one score per post (multiple-instance learning pooling).

Each (post, criterion) is a *bag* of (unit, criterion) logits; `aggregate` reduces every
bag to one logit, vectorised over many bags at once and differentiable, so the same code
scores posts and trains the post-level (MIL) loss:

- max: the best unit decides (evidence is one or two sentences of a post);
- lse: log-mean-exp with sharpness LSE_R, between the mean (r -> 0) and the max (r -> inf);
- topk: the mean of the k best units;
- attention: a softmax-weighted mean of the unit logits, the weights from the logits plus a
  learned per-unit score (attention-MIL; the scorer starts at zero, i.e. a soft max).
"""

from __future__ import annotations

import torch

LSE_R = 2.0  # lse sharpness: 1/r * log(mean(exp(r * logit)))


def aggregate(
    kind: str,
    logits: torch.Tensor,
    bags: torch.Tensor,
    n_bags: int,
    attention: torch.Tensor | None = None,
    k: int = 2,
) -> torch.Tensor:
    """One logit per bag. `logits` [N] unit logits, `bags` [N] bag index in [0, n_bags);
    `attention` [N] learned unit scores (attention only). Every bag needs >= 1 unit."""
    logits = logits.float()
    bags = bags.long()
    peak = _bag_max(logits, bags, n_bags)
    if kind == "max":
        return peak
    if kind == "lse":
        total = torch.zeros(n_bags, device=logits.device).index_add(
            0, bags, torch.exp(LSE_R * (logits - peak[bags]))
        )
        count = torch.bincount(bags, minlength=n_bags).clamp(min=1).to(logits.dtype)
        return peak + torch.log(total / count) / LSE_R
    if kind == "topk":
        order = torch.argsort(logits, descending=True, stable=True)
        order = order[torch.argsort(bags[order], stable=True)]  # by bag, best first
        sorted_bags = bags[order]
        first = torch.searchsorted(sorted_bags, sorted_bags, right=False)
        rank = torch.arange(len(order), device=logits.device) - first
        keep = rank < k
        total = torch.zeros(n_bags, device=logits.device).index_add(
            0, sorted_bags[keep], logits[order][keep]
        )
        count = torch.bincount(sorted_bags[keep], minlength=n_bags).clamp(min=1)
        return total / count.to(logits.dtype)
    if kind == "attention":
        if attention is None:
            raise ValueError("attention aggregate needs per-unit attention scores")
        energy = logits + attention.float()
        top = _bag_max(energy, bags, n_bags)
        weight = torch.exp(energy - top[bags])
        norm = torch.zeros(n_bags, device=logits.device).index_add(0, bags, weight)
        weight = weight / norm[bags]
        return torch.zeros(n_bags, device=logits.device).index_add(0, bags, weight * logits)
    raise ValueError(f"unknown aggregate {kind!r}")


def _bag_max(values: torch.Tensor, bags: torch.Tensor, n_bags: int) -> torch.Tensor:
    start = torch.full((n_bags,), float("-inf"), device=values.device, dtype=values.dtype)
    return start.scatter_reduce(0, bags, values, reduce="amax", include_self=True)


def top_units(logits: torch.Tensor, bags: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Index (into `logits`) of each bag's highest-scoring unit: the evidence shown."""
    peak = _bag_max(logits.float(), bags.long(), n_bags)
    is_top = logits.float() == peak[bags.long()]
    idx = torch.arange(len(logits), device=logits.device)
    big = torch.full((n_bags,), len(logits), device=logits.device, dtype=torch.long)
    return big.scatter_reduce(0, bags.long()[is_top], idx[is_top], reduce="amin")
