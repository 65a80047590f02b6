"""Final training of one config: fit on the non-test posts, calibrate on held-out training
posts, score the test posts once, compare with the baselines calibrated on the same posts,
and write the run folder (see `train.py` for what it holds).

`train.py` is the command; this module is what it calls once the config and data are
valid, so that a bad config fails before torch and transformers load.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import numpy as np

from nli_tune.core.config import TrainConfig
from nli_tune.core.outputs import atomic_dir
from nli_tune.evaluation.baselines import calibrated_tfidf, majority_baseline
from nli_tune.evaluation.metrics import bootstrap_macro_f1, interval, pair_metrics, post_metrics
from nli_tune.evaluation.scoring import evidence_table
from nli_tune.model.card import write_cards
from nli_tune.model.classifier import build_model, parameter_counts, save_model
from nli_tune.model.precision import autocast_dtype
from nli_tune.model.prefix import cache_prefix
from nli_tune.pairs.encoding import encode
from nli_tune.redsm5.folds import split_test
from nli_tune.redsm5.load import ReDSM5
from nli_tune.training.fold_trainer import FoldTrainer


def say(msg: str) -> None:
    print(msg, flush=True)


def train_final(cfg: TrainConfig, data: ReDSM5, device, output: str, *, quiet: bool, search):
    """Train, evaluate and write `output`/; returns metrics.json's content."""
    started = time.perf_counter()
    pairs = data.pairs()
    train_posts, test_posts = split_test(pairs, cfg.test_fraction, cfg.split_seed)
    train_pairs = pairs[pairs["post_id"].isin(set(train_posts))].reset_index(drop=True)
    test_pairs = pairs[pairs["post_id"].isin(set(test_posts))].reset_index(drop=True)
    say(
        f"data {data.source}: {len(data.posts)} posts -> train {len(train_posts)} posts "
        f"({len(train_pairs)} pairs, {int(train_pairs['label'].sum())} matched), "
        f"test {len(test_posts)} posts ({len(test_pairs)} pairs, "
        f"{int(test_pairs['label'].sum())} matched)"
    )
    say(
        f"model {cfg.model} (layers {cfg.num_layers or 'all'}, {cfg.attention}, "
        f"pooling {cfg.pooling}, DoRA r={cfg.rank} on {cfg.dora_targets}; unit {cfg.unit}, "
        f"aggregate {cfg.aggregate}; pairing {cfg.pairing}, hypothesis {cfg.hypothesis})  "
        f"device {device}"
    )
    t0 = time.perf_counter()
    say("loading the model (the first run converts and caches the 270M weights)...")
    model, tokenizer = build_model(cfg)
    counts = parameter_counts(model)
    amp = autocast_dtype(cfg.precision, device)
    say(
        f"  loaded in {time.perf_counter() - t0:.1f}s; trainable params "
        f"{counts['trainable_params']:,} of {counts['total_params']:,}  "
        f"precision {'bf16 autocast' if amp else 'fp32'}"
    )
    t0 = time.perf_counter()
    encoded = encode(tokenizer, data, cfg)
    report = encoded.report
    say(report.line())
    say(f"cut and tokenized {len(encoded.table)} units in {time.perf_counter() - t0:.1f}s")
    all_units = encoded.assemble(cfg, pairs)
    # The frozen bottom layers run once per unit, test units included (see model/prefix.py).
    all_units = cache_prefix(model.to(device), all_units, cfg.eval_batch_size, device, amp)
    train_data, test_data = all_units.subset(train_posts), all_units.subset(test_posts)
    test_pairs = test_data.pairs_frame()  # the order every test array below follows

    trainer = _fit(cfg, model, train_data, device, quiet)
    calibration = trainer.calibration
    scored = trainer.score_posts(test_data)
    test_metrics = post_metrics(test_data, scored, calibration)
    scores = calibration.prob(scored.logits).ravel()
    decisions = scores >= calibration.threshold
    # The frame the trainer split into fitting and calibration posts: the same split here.
    tfidf = calibrated_tfidf(data.texts(), train_data.pairs_frame(), test_pairs, cfg)
    labels = test_data.post_labels.ravel()
    baselines, versus = _compare(
        cfg, test_metrics, labels, decisions, tfidf, train_pairs, test_pairs
    )

    metrics = {
        "test": test_metrics,
        "baselines": baselines,
        "model_minus_tfidf": versus["tfidf_logreg"],
        "model_minus_majority": versus["majority"],
        # Which posts each scorer was fitted and calibrated on, kept so that a reader (and
        # a test) can check the TF-IDF row was decided on the same posts as the model.
        "calibration_posts": {
            "model": sorted(map(str, trainer.calib.posts)) if trainer.calib else [],
            "tfidf_logreg": sorted(map(str, tfidf.calib_posts)),
        },
        "fitting_posts": {
            "model": sorted(map(str, trainer.train.posts)),
            "tfidf_logreg": sorted(map(str, tfidf.fit_posts)),
        },
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
        "search": search if isinstance(search, dict) else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_dir(output) as out:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        evidence_table(test_data, scored, scores, decisions).to_csv(
            out / "predictions.csv", index=False
        )
        splits = {
            "split_seed": cfg.split_seed,
            "train": list(train_posts),
            "test": list(test_posts),
        }
        (out / "splits.json").write_text(json.dumps(splits, indent=1))
        save_model(model, cfg, out / "model", calibration)
        write_cards(out / "model", metrics)
    _print_summary(metrics, output)
    return metrics


def _fit(cfg: TrainConfig, model, train_data, device, quiet: bool) -> FoldTrainer:
    """Fit on the training posts (the trainer holds some out for calibration)."""
    trainer = FoldTrainer(cfg, model, train_data, None, device, log=say)
    bar = _EpochBar(cfg.epochs, enabled=not quiet)
    trainer.on_step = bar.step
    say(
        f"units: {cfg.unit}; {len(trainer.train)} in {len(trainer.train.posts)} fitted posts "
        f"({len(trainer.positives)} evidence, {trainer.n_hard} annotated absences), "
        f"calibration on {len(trainer.calib.posts) if trainer.calib else 0} held-out "
        f"training posts"
    )

    def on_epoch(m: dict) -> None:
        if not quiet:
            say(
                f"  epoch {m['epoch']}/{cfg.epochs}  loss {m['train_loss']:.4f}  "
                f"{m['tokens_per_s']:.0f} tok/s  {m['epoch_seconds']:.0f}s"
            )

    trainer.fit(on_epoch)
    return trainer


def _compare(cfg, test_metrics: dict, labels, decisions, tfidf, train_pairs, test_pairs):
    """The baseline rows and the model's paired differences from them, with 95% intervals.

    The test split is small (a few hundred pairs): the bootstrap resamples posts, and every
    row sees the same resamples, so the differences are paired.
    """
    baselines = {
        "majority": majority_baseline(train_pairs, test_pairs),
        "tfidf_logreg": pair_metrics(test_pairs, tfidf.probs, tfidf.calibration.threshold)
        | {"calibration": tfidf.calibration.to_dict() | {"how": tfidf.calibration.describe()}},
    }
    boot = bootstrap_macro_f1(
        labels,
        {
            "model": decisions,
            "tfidf_logreg": tfidf.probs >= tfidf.calibration.threshold,
            "majority": np.full(len(labels), int(train_pairs["label"].mean() >= 0.5)),
        },
        test_pairs["post_id"].to_numpy(),
        seed=cfg.split_seed,  # the same resamples whatever the training seed
    )
    test_metrics["macro_f1_ci95"] = interval(boot["model"])
    versus = {}
    for name, row in baselines.items():
        row["macro_f1_ci95"] = interval(boot[name])
        versus[name] = {
            "macro_f1_difference": test_metrics["macro_f1"] - row["macro_f1"],
            "ci95": interval(boot["model"] - boot[name]),
        }
    return baselines, versus


def _print_summary(metrics: dict, output: str) -> None:
    test, baselines = metrics["test"], metrics["baselines"]
    lo, hi = test["macro_f1_ci95"]
    print(
        f"\ntest macro-F1 {test['macro_f1']:.4f}  (95% CI {lo:.3f}-{hi:.3f} over "
        f"{metrics['data']['test_posts']} test posts; matched F1 {test['f1_matched']:.3f}, "
        f"ROC-AUC {test['roc_auc']:.3f}, within criteria "
        f"{test['roc_auc_within']:.3f}, PR-AUC {test['pr_auc']:.3f}, "
        f"evidence hit@1 "
        f"{test['evidence_hit_at_1']:.3f})"
    )
    print(f"decision: {metrics['calibration']['how']}")
    tf = baselines["tfidf_logreg"]
    print(
        f"baselines on the same split: majority-class macro-F1 "
        f"{baselines['majority']['macro_f1']:.4f}, TF-IDF + logistic regression macro-F1 "
        f"{tf['macro_f1']:.4f} (95% CI {tf['macro_f1_ci95'][0]:.3f}-{tf['macro_f1_ci95'][1]:.3f}"
        f"; ROC-AUC {tf['roc_auc']:.3f}, within criteria {tf['roc_auc_within']:.3f}, PR-AUC "
        f"{tf['pr_auc']:.3f}; calibrated like the model on the same "
        f"{len(metrics['calibration_posts']['tfidf_logreg'])} posts, threshold "
        f"{tf['threshold']:.3f})"
    )
    versus = metrics["model_minus_tfidf"]
    lo, hi = versus["ci95"]
    print(
        f"model minus TF-IDF: {versus['macro_f1_difference']:+.4f} macro-F1 "
        f"(95% CI {lo:+.3f} to {hi:+.3f}; an interval that spans 0 is no clear difference)"
    )
    print(
        f"wrote {output}/ (metrics.json, predictions.csv, splits.json, model/) "
        f"in {metrics['seconds']:.0f}s"
    )


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
