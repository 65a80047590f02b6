"""What every trial of a search shares, made once in the driver: the data, cut into units,
located and tokenized (once per unit kind and model), and the folds. Typed, so that what
travels to the fold workers says what it holds. No Ray here."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError
from nli_tune.model.prefix import PREFIX_KEYS, layer_line, prefix_key
from nli_tune.pairs.encoding import (
    PairFormat,
    UnitData,
    UnitTokens,
    assemble_for,
    pair_format,
    tokenize_units,
)
from nli_tune.redsm5.folds import FoldPlan
from nli_tune.redsm5.load import ReDSM5
from nli_tune.study.space import SearchSpace
from nli_tune.units.evidence import UnitTable, build_units


@dataclass(frozen=True)
class TrialData:
    """The search's trial data, sent once to Ray's object store; unit texts stay behind."""

    pairs: pd.DataFrame  # post_id, criterion, label of the train/validation posts
    plan: FoldPlan  # post-grouped CV folds (and the test posts kept out)
    units: dict[str, tuple[UnitTable, UnitTokens]]  # per unit kind: spans and token ids
    fmt: PairFormat  # the tokenizer's pair template
    # The frozen bottom layers' states of every unit (model/prefix.py), per prefix_key:
    # computed once here, where workers would each compute their own every trial.
    prefix: dict[tuple, list[np.ndarray]] = field(default_factory=dict)

    def nbytes(self) -> int:
        """The bytes of its arrays and tables, about what Ray's object store holds of it."""
        arrays = [a for _, tokens in self.units.values() for a in (*tokens.ids, *tokens.offsets)]
        arrays += [a for states in self.prefix.values() for a in states]
        tables = [t for t, _ in self.units.values()]
        size = sum(a.nbytes for a in arrays) + int(self.pairs.memory_usage(deep=True).sum())
        return size + sum(t.evidence.nbytes + t.hard.nbytes + t.annotated.nbytes for t in tables)

    def unit_data(self, cfg: TrainConfig) -> UnitData:
        """A trial config's (unit, criterion) data over every train/validation post, with
        its frozen-bottom states where they were computed for its config."""
        table, tokens = self.units[cfg.unit]
        data = assemble_for(cfg, table, tokens, self.fmt, self.pairs)
        states = self.prefix.get(prefix_key(cfg))
        return data if states is None else data.with_prefix(states)


def prepare_trial_data(
    space: SearchSpace,
    base: TrainConfig,
    data: ReDSM5,
    pairs: pd.DataFrame,
    plan: FoldPlan,
    say: Callable[..., None],
) -> TrialData:
    """Segment, locate and tokenize every unit kind a trial can get, once; check that the
    searched models tokenize alike and the shortest max_length fits the criteria.
    `pairs` are `data.pairs()`, which the folds were made from."""
    from nli_tune.model.backbones import checkpoint_layers, load_backbone  # the driver only

    kinds = list(dict.fromkeys(space.params.get("unit", {}).get("choice") or [base.unit]))
    tables = {}
    for kind in kinds:
        t0 = time.time()
        table, report = build_units(data, kind, base.window_sentences, base.window_stride)
        tables[kind] = table
        say(f"units '{kind}': {len(table)} ({time.time() - t0:.1f}s); {report.line()}", flush=True)
    # The driver loads each model once (one layer): that fills the conversion cache before
    # workers race for it, fails early on a model that cannot load, and tokenizes every unit
    # exactly once. All trials share these tokens, so searched models must agree on them.
    models = list(dict.fromkeys(space.params.get("model", {}).get("choice") or [base.model]))
    shared_units, fmt = None, None
    for model in models:
        t0 = time.time()
        say(f"loading {model} (converts and caches the 270M weights on first use)...", flush=True)
        _, tokenizer = load_backbone(model, num_layers=1)
        t1 = time.time()
        these = {kind: tokenize_units(tokenizer, t) for kind, t in tables.items()}
        say(
            f"  loaded in {t1 - t0:.1f}s; tokenized every unit once in {time.time() - t1:.1f}s",
            flush=True,
        )
        searched = [k for k in ("num_layers", "adapt_layers") if k in space.params]
        depth = layer_line(replace(base, model=model), checkpoint_layers(model))
        say(f"  {model}: {depth}" + (f" (searched: {', '.join(searched)})" if searched else ""))
        this_fmt = pair_format(tokenizer)
        if fmt is not None and (this_fmt != fmt or not _same_tokens(these, shared_units)):
            raise UserError(
                f"{space.source}: params.model: {model} tokenizes differently from "
                f"{models[0]}; trials share one tokenization, so search models with one "
                f"tokenizer (the Gemma-3 checkpoints share theirs) or run a search per model"
            )
        shared_units, fmt = these, this_fmt
    shortest = int(space.value_range("max_length")[0])
    if shortest < fmt.min_length():
        raise UserError(
            f"{space.source}: max_length {shortest} is too short (need >= "
            f"{fmt.min_length()} for the criteria)"
        )
    trial_pairs = pairs[pairs["post_id"].isin(set(plan.trainval_posts))].reset_index(drop=True)
    # Workers get spans, labels and token ids: the unit texts stay in this process.
    units = {kind: (replace(t, texts=[]), shared_units[kind]) for kind, t in tables.items()}
    trial_data = TrialData(trial_pairs, plan, units, fmt)
    if space.gpus_per_worker == 0:  # GPU workers compute theirs on their device, fast
        _cache_prefixes(space, trial_data, say)
    return trial_data


def _cache_prefixes(space: SearchSpace, data: TrialData, say) -> None:
    """The frozen bottom's states of every unit, once per distinct prefix_key the space's
    configs can have (choice params only; a config sampled otherwise computes its own)."""
    import torch

    from nli_tune.model.classifier import build_model
    from nli_tune.model.precision import autocast_dtype
    from nli_tune.model.prefix import cache_prefix

    keys = [k for k in PREFIX_KEYS if k in space.params]
    if any("choice" not in space.params[k] for k in keys):
        return
    cpu = torch.device("cpu")
    for values in itertools.product(*(space.params[k]["choice"] for k in keys)):
        cfg = space.trial_config(dict(zip(keys, values, strict=True)))
        if prefix_key(cfg) in data.prefix:
            continue
        t0 = time.time()
        model, _ = build_model(cfg, tokenizer=False)
        units = cache_prefix(
            model, data.unit_data(cfg), cfg.eval_batch_size, cpu, autocast_dtype(cfg.precision, cpu)
        )
        if units.prefix is not None:
            data.prefix[prefix_key(cfg)] = units.prefix
            seconds = time.time() - t0
            say(f"  frozen bottom layers run once for {len(units)} units in {seconds:.1f}s")


def _same_tokens(a: dict, b: dict) -> bool:
    return all(
        len(a[k].ids) == len(b[k].ids)
        and all(np.array_equal(x, y) for x, y in zip(a[k].ids, b[k].ids, strict=True))
        for k in a
    )
