"""`key=value` overrides on the command line, as Hydra users type them.

    python -m nli_tune.train lr=1e-3 pooling=attention
    python -m nli_tune.search --space pooling num_samples=4 epochs=2 asha.grace_period=2

A value is parsed as the YAML file would parse it (`1e-3`, `null`, `[4, 8]`, `true`). The
project this one replaces named keys by section (`training.learning_rate`,
`model.pooling_strategy`, `model.name`): those names are accepted as aliases of the flat
keys; any other dotted training name is refused with the flat keys listed.
"""

from __future__ import annotations

from typing import Any

import yaml

from nli_tune.core.errors import UserError

# The earlier project's names -> this one's training-config keys.
ALIASES = {
    "training.learning_rate": "lr",
    "training.batch_size": "batch_size",
    "training.num_epochs": "epochs",
    "training.epochs": "epochs",
    "training.weight_decay": "weight_decay",
    "training.warmup_ratio": "warmup_ratio",
    "training.seed": "seed",
    "model.name": "model",
    "model.pooling_strategy": "pooling",
    "model.max_length": "max_length",
    "model.num_layers": "num_layers",
    "model.lora_r": "rank",
    "model.lora_alpha": "alpha",
}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """{key: value} of `key=value` words, aliases resolved, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: write KEY=VALUE, e.g. lr=1e-3")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as err:
            raise UserError(f"override {item!r}: not a YAML value ({err.problem})") from None
        out[ALIASES.get(key, key)] = value
    return out


def training_overrides(overrides: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The overrides of training-config keys; any other name is refused with the list."""
    unknown = sorted(k for k in overrides if k not in keys)
    if unknown:
        raise UserError(
            f"override {unknown[0]!r}: not a training-config key (known: {', '.join(keys)}; "
            f"the earlier project's names: {', '.join(sorted(ALIASES))})"
        )
    return overrides
