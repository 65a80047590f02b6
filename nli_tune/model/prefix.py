"""The frozen bottom of the encoder, run once per unit instead of once per step.

With `adapt_layers: N` DoRA adapts only the top N decoder layers; the layers below carry
no adapter and never change, so a unit's hidden states at the first adapted layer are the
same in every epoch. With `pairing: multilabel` a unit is one sequence (it carries no
criterion text), so those states are computed once per unit (`cache_prefix`) and every
training step and scoring pass runs only the adapted top (`PairClassifier.score(states=)`).
At 18 layers with the top 6 adapted this is 3x fewer layer passes per token in training
and in scoring (benchmarks/quality-depth.json has the wall times).

Both halves are the library's own `Gemma3TextModel.forward` over a span of the shared
layers (`layer_span`): the bottom from token ids without the final norm, the top from
`inputs_embeds` with it. A test checks that bottom then top equals the whole model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from nli_tune.model.precision import autocast
from nli_tune.pairs.encoding import UnitData, collate, sorted_batches


def layer_span(text_model: nn.Module, start: int, stop: int) -> nn.Module:
    """A view of `text_model` (a Gemma3TextModel) that runs decoder layers [start, stop):
    it shares every module and parameter, takes token ids (start 0) or the hidden states
    entering layer `start` (`inputs_embeds`), and applies the final norm only when `stop`
    is the last layer. Not a submodule of anything: its parameters stay counted once."""
    n = len(text_model.layers)
    if not 0 <= start < stop <= n:
        raise ValueError(f"layer span [{start}, {stop}) outside the model's {n} layers")
    view = copy.copy(text_model)
    view._modules = dict(text_model._modules)  # its own module table; the modules are shared
    view.layers = nn.ModuleList(list(text_model.layers)[start:stop])
    config = copy.copy(text_model.config)
    config.num_hidden_layers = stop - start
    config.layer_types = list(text_model.config.layer_types)[start:stop]
    view.config = config
    if stop < n:
        view.norm = nn.Identity()  # the states entering layer `stop`, as the next span wants
    return view


# The config keys a unit's frozen-bottom states depend on (with the tokens): two configs
# that agree on them share one cache.
PREFIX_KEYS = ("model", "num_layers", "adapt_layers", "attention", "unit", "max_length",
               "pairing", "precision")  # fmt: skip


def prefix_key(cfg) -> tuple:
    return tuple(getattr(cfg, k) for k in PREFIX_KEYS)


def layer_line(cfg, n_layers: int) -> str:
    """'18 layers, DoRA r=16 on attention of the top 6' (what a run says it trains), for a
    checkpoint of `n_layers` decoder layers."""
    n = n_layers if cfg.num_layers is None else min(cfg.num_layers, n_layers)
    top = n - frozen_layers(cfg, n)
    where = "every layer" if top == n else f"the top {top} (the {n - top} below run once per unit)"
    return f"{n} layers, DoRA r={cfg.rank} on {cfg.dora_targets} of {where}"


def frozen_layers(cfg, n_layers: int) -> int:
    """Decoder layers below the adapted ones (0: every layer is adapted)."""
    adapt = cfg.adapt_layers
    return 0 if adapt is None or adapt >= n_layers else n_layers - adapt


@torch.no_grad()
def cache_prefix(model, data: UnitData, batch_size: int, device, amp) -> UnitData:
    """`data` with the frozen layers' output of every unit (`UnitData.prefix`, fp32 on the
    CPU, one [tokens, hidden] array per unit), or `data` unchanged where nothing is frozen
    or a unit's sequence depends on the criterion (nli pairs)."""
    if data.prefix is not None or model.bottom is None or data.pairing != "multilabel":
        return data
    device = torch.device(device)
    model.eval()
    states: list[np.ndarray | None] = [None] * len(data)
    crits = np.zeros(len(data), np.int64)
    for idx in sorted_batches(data.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(data, idx, crits[idx]).items()}
        with autocast(device, amp):
            out = model.prefix_states(batch["input_ids"], batch["attention_mask"])
        out = out.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        for row, u in enumerate(idx):
            states[u] = out[row, : lengths[row]].copy()
    return data.with_prefix(states)
