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
import json
import os
import re
import sys
import time
from pathlib import Path

from nli_tune.core.config import TrainConfig, read_mapping
from nli_tune.core.errors import UserError, run_cli
from nli_tune.core.overrides import parse_overrides, training_overrides
from nli_tune.model.device import add_device_args, select_device
from nli_tune.redsm5.folds import split_test
from nli_tune.redsm5.load import load_redsm5

DEFAULT_ROOT = Path("outputs/final")  # where runs go without --output, one folder each
LATEST = "latest"  # DEFAULT_ROOT/latest: the newest of them


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.train",
        description="Train one config on all non-test posts and evaluate it once on the "
        "held-out test posts. With no --config it trains the embedded default: the real "
        "Gemma-3 270M on the bundled sample. A config a search exported is tested on that "
        "search's held-out posts (its folds.json). A fit that did not learn (its train loss "
        "stalled, or it ranks its calibration posts near chance) is retried with the next "
        "seed.",
    )
    p.add_argument(
        "--config",
        help="YAML/JSON training config, e.g. a search's "
        "best_config.yaml (default: built-in defaults)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="training-config keys over the config's, parsed as YAML (lr=1e-3 "
        "pooling=attention); the earlier project's names (training.learning_rate, "
        "model.pooling_strategy, model.name, ...) are aliases",
    )
    p.add_argument(
        "--output",
        help="output folder (default outputs/final/<model>-<date>-<time>, and "
        "outputs/final/latest points to the newest); an existing one is refused unless "
        "--overwrite",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output if it exists (when the run succeeds; a failed run leaves it)",
    )
    p.add_argument(
        "--data-dir",
        help="ReDSM5 folder; overrides the config's data_dir "
        "(default: the bundled synthetic sample)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="fits tried again, each with the next seed, while a fit did not learn "
        "(default 2; 0: one fit, kept whatever it did)",
    )
    add_device_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw = read_mapping(args.config) if args.config else {}
    overrides = training_overrides(parse_overrides(args.overrides), TrainConfig.keys())
    source = " + ".join([str(args.config)] * bool(args.config) + ["command line"] * bool(overrides))
    cfg = TrainConfig.from_dict(raw | overrides, source=source or "defaults")  # {}: defaults
    if args.data_dir:
        cfg.data_dir = args.data_dir
    if args.retries < 0:
        raise UserError(f"--retries {args.retries}: must be >= 0")
    output = _output(args, cfg)
    data = load_redsm5(cfg.data_dir)  # a bad CSV fails here, before torch loads
    _check_held_out(raw.get("search"), data, cfg, args.config)
    device = select_device(args)
    _warn_fingerprint(raw.get("search"), data.fingerprint)

    from nli_tune.training.final import train_final  # torch, transformers, peft: seconds to import

    search = raw.get("search")
    train_final(
        cfg, data, device, str(output), quiet=args.quiet, search=search, retries=args.retries
    )
    if args.output is None:  # the newest default run, for the commands that follow
        latest = output.parent / LATEST
        latest.unlink(missing_ok=True)
        latest.symlink_to(output.name, target_is_directory=True)
    return 0


def _output(args, cfg: TrainConfig) -> Path:
    """--output, or a new folder named after the model and the time: no run replaces
    another unless --overwrite says so."""
    if args.output is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(cfg.model).name or cfg.model)
        return DEFAULT_ROOT / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(
            f"--output {output}: exists (an earlier run?); pass --overwrite to replace it, "
            f"or another --output (default: a new folder under {DEFAULT_ROOT})"
        )
    return output


def _check_held_out(search_meta, data, cfg: TrainConfig, config_path) -> None:
    """A config a search exported is tested on that search's held-out posts: refuse a split
    (split_seed, test_fraction, other data) that would train on any of them, or test on
    posts the search selected with."""
    folds_file = search_meta.get("folds_file") if isinstance(search_meta, dict) else None
    if not folds_file:
        return
    path = Path(folds_file)
    if not path.is_file():
        raise UserError(
            f"{config_path}: the search's {path} is gone; train tests on the posts that "
            f"search held out, so restore it (or delete the config's search: block to split "
            f"afresh)"
        )
    held_out = set(map(str, json.loads(path.read_text())["test"]))
    _, test = split_test(data.pairs(), cfg.test_fraction, cfg.split_seed)
    if set(map(str, test)) != held_out:
        mixed = len(held_out - set(map(str, test)))
        raise UserError(
            f"{config_path}: split_seed {cfg.split_seed} and test_fraction {cfg.test_fraction} "
            f"on {data.source} hold out other posts than the search did ({path}): {mixed} of "
            f"its {len(held_out)} test posts would be trained on or the test would hold posts "
            f"it selected with; keep the exported split_seed, test_fraction and data"
        )


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
