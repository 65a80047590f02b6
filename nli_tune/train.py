"""Final training: train a config on all non-test posts, score the held-out test posts once.

    python -m nli_tune.train                                  # embedded default
    python -m nli_tune.train --config outputs/pooling/best_config.yaml

Each post is cut into units (sentences by default), every unit is scored against each
criterion and the scores aggregate to the post; the post score is calibrated on training
posts held out from fitting. Writes under --output: metrics.json (test.macro_f1 and
baselines), predictions.csv (post_id, criterion, label, score, decision and the evidence
unit's number and character span; never text), splits.json (post ids) and model/ (DoRA
adapter + pooler/head as safetensors, config.yaml, calibration.json, and README.md: the
Hugging Face model card, see model/card.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from nli_tune.core.config import TrainConfig, read_mapping
from nli_tune.core.errors import run_cli
from nli_tune.model.device import add_device_args, select_device
from nli_tune.redsm5.load import load_redsm5


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.train",
        description="Train one config on all non-test posts and evaluate it once on the "
        "held-out test posts. With no --config it trains the embedded default: "
        "the first 3 layers of the real Gemma-3 270M on the bundled sample.",
    )
    p.add_argument(
        "--config",
        help="YAML/JSON training config, e.g. a search's "
        "best_config.yaml (default: built-in defaults)",
    )
    p.add_argument(
        "--output",
        default="outputs/final",
        help="output folder, replaced when the run succeeds (default outputs/final)",
    )
    p.add_argument(
        "--data-dir",
        help="ReDSM5 folder; overrides the config's data_dir "
        "(default: the bundled synthetic sample)",
    )
    add_device_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw = read_mapping(args.config) if args.config else {}
    cfg = TrainConfig.from_dict(raw, source=str(args.config))  # {} -> the defaults
    if args.data_dir:
        cfg.data_dir = args.data_dir
    data = load_redsm5(cfg.data_dir)  # a bad CSV fails here, before torch loads
    device = select_device(args)
    _warn_fingerprint(raw.get("search"), data.fingerprint)

    from nli_tune.training.final import train_final  # torch, transformers, peft: seconds to import

    train_final(cfg, data, device, args.output, quiet=args.quiet, search=raw.get("search"))
    return 0


def _warn_fingerprint(search_meta, fingerprint: str) -> None:
    """Warn when a search's exported config is trained on other data than it was chosen on."""
    expected = search_meta.get("data_fingerprint") if isinstance(search_meta, dict) else None
    if expected and not fingerprint.startswith(str(expected)):
        print(
            f"warning: data fingerprint {fingerprint[:16]} differs from the one the search "
            f"used ({str(expected)[:16]}): the config was chosen on other data",
            file=sys.stderr,
        )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(run_cli(main))
