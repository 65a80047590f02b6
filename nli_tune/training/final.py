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
from dataclasses import asdict, replace

from nli_tune.core.config import TrainConfig
from nli_tune.core.outputs import atomic_dir
from nli_tune.evaluation.comparison import test_comparison
from nli_tune.evaluation.scoring import evidence_table
from nli_tune.model.card import write_cards
from nli_tune.model.classifier import build_model, parameter_counts, save_model
from nli_tune.model.precision import autocast_dtype
from nli_tune.model.prefix import cache_prefix, layer_line
from nli_tune.pairs.encoding import encode
from nli_tune.redsm5.folds import split_test
from nli_tune.redsm5.load import ReDSM5
from nli_tune.training.fold_trainer import FoldTrainer


def say(msg: str) -> None:
    print(msg, flush=True)


def train_final(
    cfg: TrainConfig, data: ReDSM5, device, output: str, *, quiet: bool, search, retries: int = 2
):
    """Train, evaluate and write `output`/; returns metrics.json's content. A fit that did
    not learn (training/learned.py) is retried with the next seed, up to `retries` times."""
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
    t0 = time.perf_counter()
    say(f"loading {cfg.model} (the first run converts and caches the 270M weights)...")
    model, tokenizer = build_model(cfg)
    counts = parameter_counts(model)
    amp = autocast_dtype(cfg.precision, device)
    say(
        f"model {cfg.model}: {layer_line(cfg, model.backbone.config.num_hidden_layers)}, "
        f"{cfg.attention}, pooling "
        f"{cfg.pooling}; unit {cfg.unit}, aggregate {cfg.aggregate}; pairing {cfg.pairing}, "
        f"hypothesis {cfg.hypothesis}; device {device}"
    )
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

    trainer, attempts = _fit_until_learned(cfg, model, train_data, device, quiet, retries)
    # The kept fit's model and config (its seed is the one that fit used).
    model, calibration, cfg = trainer.model, trainer.calibration, trainer.cfg
    scored = trainer.score_posts(test_data)
    scores = calibration.prob(scored.logits).ravel()
    decisions = calibration.decide(scored.logits).ravel()
    # The frame the trainer split into fitting and calibration posts: the same split here.
    compared = test_comparison(
        cfg, test_data, scored, calibration, data.texts(), train_data.pairs_frame()
    )
    tfidf_posts = compared.pop("tfidf_posts")
    metrics = compared | {
        # Which posts each scorer was fitted and calibrated on, kept so that a reader (and
        # a test) can check the TF-IDF row was decided on the same posts as the model.
        "calibration_posts": {
            "model": sorted(map(str, trainer.calib.posts)) if trainer.calib else [],
            "tfidf_logreg": tfidf_posts["calibration"],
        },
        "fitting_posts": {
            "model": sorted(map(str, trainer.train.posts)),
            "tfidf_logreg": tfidf_posts["fitting"],
        },
        "calibration": calibration.to_dict() | {"how": calibration.describe()},
        "evidence_location": asdict(report) | {"located": report.located},
        "train_history": trainer.state.history,
        # Every fit tried (seed, the learned-fit rule's verdict and numbers); the kept one
        # was chosen on calibration posts only.
        "attempts": attempts,
        "kept_attempt": next(i for i, a in enumerate(attempts) if a["kept"]),
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


def _fit_until_learned(cfg, model, train_data, device, quiet: bool, retries: int):
    """Fit; while the fit did not learn, say so and fit again with the next seed (a fresh
    model), up to `retries` times. Keeps the first fit that learned, else the one that
    ranks its calibration posts best: never chosen on test posts. Returns (trainer,
    attempts)."""
    kept, attempts = None, []
    for attempt in range(retries + 1):
        run = replace(cfg, seed=cfg.seed + attempt)
        if attempt:
            model, _ = build_model(run, tokenizer=False)
        trainer = _fit(run, model, train_data, device, quiet)
        check = trainer.fit_check()
        attempts.append({"seed": run.seed, "kept": False, **check.to_dict()})
        say(f"fit {attempt + 1} (seed {run.seed}): {check.line()}")
        if check.learned or kept is None or _calib_rank(check) > _calib_rank(kept[1]):
            kept = (attempt, check, trainer)
        if check.learned:
            break
        if attempt < retries:
            say(f"  retrying with seed {run.seed + 1} ({retries - attempt} retries left)")
        else:
            say(
                f"  no fit learned in {retries + 1} tries; keeping fit {kept[0] + 1}, the best "
                f"on the calibration posts: its test scores below may be no better than TF-IDF"
            )
    attempts[kept[0]]["kept"] = True
    return kept[2], attempts


def _calib_rank(check) -> float:
    auc = check.calib_roc_auc_within
    return -1.0 if auc != auc else auc  # NaN last


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
