"""Final training: train a config on all non-test posts, score the held-out test posts once.

    python -m nli_tune.train                                  # embedded default
    python -m nli_tune.train --config outputs/pooling/best_config.yaml

Each post is cut into units (sentences by default), every unit is scored against each
criterion and the scores aggregate to the post; the post score is calibrated on training
posts held out from fitting. Writes under --output: metrics.json (test.macro_f1 and
baselines), predictions.csv (post_id, criterion, label, score, decision and the evidence
unit's number and character span; never text), splits.json (post ids) and model/ (DoRA
adapter + pooler/head as safetensors, config.yaml, calibration.json, and README.md: the
Hugging Face model card, see model_card.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np

from nli_tune.baselines import calibrated_tfidf, majority_baseline
from nli_tune.config import TrainConfig, read_mapping
from nli_tune.data import load_redsm5
from nli_tune.device import add_device_args, select_device
from nli_tune.encoding import assemble_for, pair_format, tokenize_units
from nli_tune.errors import run_cli
from nli_tune.evidence import build_units
from nli_tune.folds import split_test
from nli_tune.metrics import bootstrap_macro_f1, interval, pair_metrics, post_metrics
from nli_tune.model import build_model, parameter_counts, save_model
from nli_tune.model_card import write_cards
from nli_tune.outputs import atomic_dir
from nli_tune.scoring import evidence_table
from nli_tune.trainer import FoldTrainer, autocast_dtype


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
    device = select_device(args)
    started = time.perf_counter()

    data = load_redsm5(cfg.data_dir)
    _warn_fingerprint(raw.get("search"), data.fingerprint)
    pairs = data.pairs()
    train_posts, test_posts = split_test(pairs, cfg.test_fraction, cfg.seed)
    train_pairs = pairs[pairs["post_id"].isin(set(train_posts))].reset_index(drop=True)
    test_pairs = pairs[pairs["post_id"].isin(set(test_posts))].reset_index(drop=True)
    print(
        f"data {data.source}: {len(data.posts)} posts -> train {len(train_posts)} posts "
        f"({len(train_pairs)} pairs, {int(train_pairs['label'].sum())} matched), "
        f"test {len(test_posts)} posts ({len(test_pairs)} pairs, "
        f"{int(test_pairs['label'].sum())} matched)",
        flush=True,
    )

    print(
        f"model {cfg.model} (layers {cfg.num_layers or 'all'}, {cfg.attention}, "
        f"pooling {cfg.pooling}, DoRA r={cfg.rank} on {cfg.dora_targets}; unit {cfg.unit}, "
        f"aggregate {cfg.aggregate}; pairing {cfg.pairing}, hypothesis {cfg.hypothesis})  "
        f"device {device}",
        flush=True,
    )
    table, report = build_units(data, cfg.unit, cfg.window_sentences, cfg.window_stride)
    print(report.line(), flush=True)
    t0 = time.perf_counter()
    print("loading the model (the first run converts and caches the 270M weights)...", flush=True)
    model, tokenizer = build_model(cfg)
    counts = parameter_counts(model)
    amp = autocast_dtype(cfg.precision, device)
    print(
        f"  loaded in {time.perf_counter() - t0:.1f}s; trainable params "
        f"{counts['trainable_params']:,} of {counts['total_params']:,}  "
        f"precision {'bf16 autocast' if amp else 'fp32'}",
        flush=True,
    )
    fmt = pair_format(tokenizer)
    t0 = time.perf_counter()
    tokens = tokenize_units(tokenizer, table)
    print(f"tokenized {len(table)} units in {time.perf_counter() - t0:.1f}s", flush=True)
    all_units = assemble_for(cfg, table, tokens, fmt, pairs)
    train_data, test_data = all_units.subset(train_posts), all_units.subset(test_posts)
    test_pairs = test_data.pairs_frame()  # the order every test array below follows
    texts = data.texts()

    trainer = FoldTrainer(
        cfg, model, train_data, None, device, log=lambda msg: print(msg, flush=True)
    )
    bar = _EpochBar(cfg.epochs, enabled=not args.quiet)
    trainer.on_step = bar.step
    print(
        f"units: {cfg.unit}; {len(trainer.train)} in {len(trainer.train.posts)} fitted posts "
        f"({len(trainer.positives)} evidence, {trainer.n_hard} annotated absences), "
        f"calibration on {len(trainer.calib.posts) if trainer.calib else 0} held-out "
        f"training posts",
        flush=True,
    )

    def on_epoch(m: dict) -> None:
        if args.quiet:
            return
        print(
            f"  epoch {m['epoch']}/{cfg.epochs}  loss {m['train_loss']:.4f}  "
            f"{m['tokens_per_s']:.0f} tok/s  {m['epoch_seconds']:.0f}s",
            flush=True,
        )

    trainer.fit(on_epoch)
    calibration = trainer.calibration
    scored = trainer.score_posts(test_data)
    test_metrics = post_metrics(test_data, scored, calibration)
    scores = calibration.prob(scored.logits).ravel()
    decisions = scores >= calibration.threshold
    labels = test_data.post_labels.ravel()
    # The frame the trainer split into fitting and calibration posts: the same split here.
    tfidf = calibrated_tfidf(texts, train_data.pairs_frame(), test_pairs, cfg)
    baselines = {
        "majority": majority_baseline(train_pairs, test_pairs),
        "tfidf_logreg": pair_metrics(test_pairs, tfidf.probs, tfidf.calibration.threshold)
        | {"calibration": tfidf.calibration.to_dict() | {"how": tfidf.calibration.describe()}},
    }
    # The test split is small (a few hundred pairs): give its uncertainty, by post. Every
    # row sees the same resamples, so the differences are paired.
    boot = bootstrap_macro_f1(
        labels,
        {
            "model": decisions,
            "tfidf_logreg": tfidf.probs >= tfidf.calibration.threshold,
            "majority": np.full(len(labels), int(train_pairs["label"].mean() >= 0.5)),
        },
        test_pairs["post_id"].to_numpy(),
        seed=cfg.seed,
    )
    test_metrics["macro_f1_ci95"] = interval(boot["model"])
    versus = {}
    for name, row in baselines.items():
        row["macro_f1_ci95"] = interval(boot[name])
        versus[name] = {
            "macro_f1_difference": test_metrics["macro_f1"] - row["macro_f1"],
            "ci95": interval(boot["model"] - boot[name]),
        }
    versus_tfidf = versus["tfidf_logreg"]
    # Which posts each scorer was fitted and calibrated on, kept so that a reader (and a
    # test) can check the TF-IDF row was decided on the same posts as the model.
    calibration_posts = {
        "model": sorted(map(str, trainer.calib.posts)) if trainer.calib else [],
        "tfidf_logreg": sorted(map(str, tfidf.calib_posts)),
    }
    fitting_posts = {
        "model": sorted(map(str, trainer.train.posts)),
        "tfidf_logreg": sorted(map(str, tfidf.fit_posts)),
    }

    metrics = {
        "test": test_metrics,
        "baselines": baselines,
        "model_minus_tfidf": versus_tfidf,
        "model_minus_majority": versus["majority"],
        "calibration_posts": calibration_posts,
        "fitting_posts": fitting_posts,
        "calibration": calibration.to_dict() | {"how": calibration.describe()},
        "evidence_location": asdict(report) | {"located": report.located},
        "train_history": trainer.state.history,
        "data": {
            "source": str(data.source),
            "fingerprint": data.fingerprint,
            "train_posts": len(train_posts),
            "test_posts": len(test_posts),
            "train_pairs": len(train_pairs),
            "test_pairs": len(test_pairs),
            "test_matched": int(test_pairs["label"].sum()),
        },
        "model": counts | {"precision": "bf16" if amp else "fp32", "device": str(device)},
        "units": {"train": len(trainer.train), "test": len(test_data)},
        "config": cfg.to_dict(),
        # The search that exported this config (its best trial and MLflow run), if any: the
        # search report finds this run by it.
        "search": raw.get("search") if isinstance(raw.get("search"), dict) else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_dir(args.output) as out:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        evidence_table(test_data, scored, scores, decisions).to_csv(
            out / "predictions.csv", index=False
        )
        (out / "splits.json").write_text(
            json.dumps(
                {"seed": cfg.seed, "train": list(train_posts), "test": list(test_posts)}, indent=1
            )
        )
        save_model(model, cfg, out / "model", calibration)
        write_cards(out / "model", metrics)

    lo, hi = test_metrics["macro_f1_ci95"]
    print(
        f"\ntest macro-F1 {test_metrics['macro_f1']:.4f}  (95% CI {lo:.3f}-{hi:.3f} over "
        f"{len(test_posts)} test posts; matched F1 {test_metrics['f1_matched']:.3f}, "
        f"ROC-AUC {test_metrics['roc_auc']:.3f}, within criteria "
        f"{test_metrics['roc_auc_within']:.3f}, PR-AUC {test_metrics['pr_auc']:.3f}, "
        f"evidence hit@1 "
        f"{test_metrics['evidence_hit_at_1']:.3f})"
    )
    print(f"decision: {calibration.describe()}")
    tf = baselines["tfidf_logreg"]
    print(
        f"baselines on the same split: majority-class macro-F1 "
        f"{baselines['majority']['macro_f1']:.4f}, TF-IDF + logistic regression macro-F1 "
        f"{tf['macro_f1']:.4f} (95% CI {tf['macro_f1_ci95'][0]:.3f}-{tf['macro_f1_ci95'][1]:.3f}"
        f"; ROC-AUC {tf['roc_auc']:.3f}, within criteria {tf['roc_auc_within']:.3f}, PR-AUC "
        f"{tf['pr_auc']:.3f}; calibrated like the model on the same "
        f"{len(calibration_posts['tfidf_logreg'])} posts, threshold {tf['threshold']:.3f})"
    )
    lo, hi = versus_tfidf["ci95"]
    print(
        f"model minus TF-IDF: {versus_tfidf['macro_f1_difference']:+.4f} macro-F1 "
        f"(95% CI {lo:+.3f} to {hi:+.3f}; an interval that spans 0 is no clear difference)"
    )
    print(
        f"wrote {args.output}/ (metrics.json, predictions.csv, splits.json, model/) "
        f"in {metrics['seconds']:.0f}s"
    )
    return 0


class _EpochBar:
    """A tqdm progress bar per epoch (on stderr): batches done, running loss, tokens/s."""

    def __init__(self, epochs: int, enabled: bool):
        self.epochs, self.enabled, self.bar = epochs, enabled, None

    def step(self, m: dict) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        if self.bar is None:
            desc = f"epoch {m['epoch']}/{self.epochs}"
            # Redrawn in place on a terminal; into a log file only every 30 s.
            every = 0.5 if sys.stderr.isatty() else 30
            self.bar = tqdm(
                total=m["steps"], desc=desc, unit="batch", leave=False, mininterval=every
            )
        self.bar.set_postfix(
            loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}", refresh=False
        )
        self.bar.update(1)
        if m["step"] == m["steps"]:
            self.bar.close()
            self.bar = None


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
