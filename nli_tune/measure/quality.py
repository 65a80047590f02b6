"""Quality side by side: each design and the baselines on the same post-grouped CV folds.

    python -m nli_tune.bench quality [--folds 3] [--data-dir DIR] [--output quality.json]

On the K folds a search would use (same seed, same held-out test posts left out) it trains
and scores: the seed's whole-post format (`unit: post`), the evidence-level default, its
two cheaper units (`hypothesis: name`; `pairing: multilabel`), TF-IDF + one logistic
regression per criterion, and the majority class. Every model trained on a
fold also scores a fresh synthetic draw whose labelled sentences come only from templates
the bundled sample never uses (`data synth --templates heldout`): wording it never saw.
Prints one table (CV macro-F1 mean ± std, within-criterion ROC-AUC, evidence hit@1, the
held-out-template scores, wall time) and writes every number to JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nli_tune.core.config import PAIRINGS, TrainConfig
from nli_tune.evaluation.baselines import MAJORITY, TFIDF, baseline_metrics, posts_frame
from nli_tune.evaluation.metrics import post_metrics
from nli_tune.evaluation.scoring import score_posts
from nli_tune.model.classifier import build_model, load_trainable
from nli_tune.model.precision import autocast_dtype
from nli_tune.model.prefix import cache_prefix
from nli_tune.pairs.encoding import encode
from nli_tune.redsm5.folds import make_folds
from nli_tune.redsm5.load import load_redsm5
from nli_tune.training.fold_trainer import FoldTrainer
from nli_tune.training.learned import check_fit
from nli_tune.training.seeds import fit_seed

# The neural designs compared: name -> config overrides of the defaults.
DESIGNS = {
    "whole post (seed format)": ("post", {"unit": "post"}),
    "evidence level (default)": ("evidence", {}),
    # The cheaper units: a 2-4-token hypothesis, or one pass per unit for all 9 criteria.
    "evidence level, hypothesis name": ("name", {"hypothesis": "name"}),
    "evidence level, multilabel": ("multilabel", {"pairing": "multilabel"}),
}
ROWS = ["baselines", *dict.fromkeys(key for key, _ in DESIGNS.values())]  # --only choices
HELDOUT_SEED = 2026  # seed of the held-out-template draw


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nli_tune.core.config import read_mapping

    shared = read_mapping(args.config) if args.config else {}
    base = TrainConfig.from_dict(shared, source=str(args.config))
    data = load_redsm5(args.data_dir or base.data_dir)
    pairs = data.pairs()
    plan = make_folds(pairs, args.folds, base.test_fraction, base.split_seed)
    texts = data.texts()
    heldout = _heldout_draw(args.heldout_posts, data) if args.heldout_posts else None
    rows: dict[str, dict] = {}
    print(
        f"quality on {len(plan.trainval_posts)} posts of {data.source}, {args.folds} folds "
        f"(split seed {base.split_seed}); held-out-template draw: {args.heldout_posts} posts",
        flush=True,
    )

    only = set(args.only or ROWS)
    if "baselines" in only:
        rows |= _baseline_rows(pairs, texts, plan, args.folds, heldout, base)

    designs = _grid(args) or [(n, o) for n, (key, o) in DESIGNS.items() if key in only]
    for name, overrides in designs:
        cfg = TrainConfig.from_dict(shared | overrides)
        rows[name] = _design_row(
            name, cfg, data, pairs, plan, args.folds, heldout, args.lrs, args.curve
        )

    result = {
        "data": str(data.source),
        "fingerprint": data.fingerprint[:16],
        "folds": args.folds,
        "split_seed": base.split_seed,
        "seed": base.seed,
        "heldout_posts": args.heldout_posts,
        "machine": _machine(),
        "config_overrides": shared,
        "rows": rows,
    }
    out = Path(args.output)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown_table(result))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench quality", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--folds", type=int, default=3, help="CV folds, as in a search (default 3)")
    p.add_argument("--data-dir", help="ReDSM5 folder (default: the bundled synthetic sample)")
    p.add_argument(
        "--heldout-posts",
        type=int,
        default=120,
        help="posts in the held-out-template draw (default 120; 0 skips it)",
    )
    p.add_argument("--config", help="YAML/JSON config overrides shared by every design")
    p.add_argument(
        "--only",
        choices=ROWS,
        action="append",
        help="run only these rows (repeatable; default all)",
    )
    p.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        help="an lr sweep: each design trains at every lr on CV and keeps the one with the "
        "best CV macro-F1 (its fold models alone score the held-out draw; default: the "
        "config's lr)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help="score validation at every epoch, not only the last (recorded per fit: the "
        "epochs a design needs; costs a scoring pass per epoch)",
    )
    grid = p.add_argument_group(
        "depth x pairing grid (instead of the designs above; baselines still run)"
    )
    grid.add_argument("--depths", nargs="+", type=_depth, help="num_layers values: N or all")
    grid.add_argument("--pairings", nargs="+", choices=PAIRINGS, default=["multilabel"])
    grid.add_argument(
        "--adapt-layers",
        nargs="+",
        type=_depth,
        default=[None],
        help="adapt_layers values: N (DoRA on the top N layers) or all (default all)",
    )
    p.add_argument("--output", default="quality.json", help="JSON results (and a .md table)")
    return p


def _depth(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive integer or 'all'")
    return int(value)


def _grid(args) -> list[tuple[str, dict]]:
    """(row name, config overrides) of every depth x pairing x adapt_layers cell."""
    rows = []
    for depth in args.depths or []:
        for pairing in args.pairings:
            for adapt in args.adapt_layers:
                if adapt is not None and depth is not None and adapt >= depth:
                    continue  # every layer is adapted: the "all" cell
                name = f"{pairing}, {'all' if depth is None else depth} layer"
                name += "" if depth == 1 else "s"
                if adapt is not None:
                    name += f", top {adapt} adapted"
                rows.append(
                    (name, {"pairing": pairing, "num_layers": depth, "adapt_layers": adapt})
                )
    return rows


def _design_row(
    name: str, cfg, data, pairs, plan, n_folds: int, heldout, lrs=None, curve=False
) -> dict:
    """One design trained on every fold at each lr of `lrs` (default: its own), the lr with
    the best CV macro-F1 kept; that lr's fold models then score the held-out-template draw.
    Every fit is recorded (its seed, train-loss curve, calibration and validation scores;
    with `curve`, validation at every epoch, else at the last only)."""
    lrs = list(lrs or [cfg.lr])
    cpu = torch.device("cpu")
    amp = autocast_dtype(cfg.precision, cpu)
    units = None  # encoded (and the frozen layers run) once per design: the folds share it
    sweep, fits, kept = [], [], {}
    for lr in lrs:
        run = replace(cfg, lr=lr)
        started, folds, calib = time.perf_counter(), [], []
        for k in range(n_folds):
            t0 = time.perf_counter()
            # Each fold its own luck; every fit runs all its epochs (no early stop).
            run_k = replace(run, seed=fit_seed(cfg.seed, k), patience=0)
            model, tok = build_model(run_k)
            if units is None:
                units = encode(tok, data, cfg).assemble(cfg, pairs)
                units = cache_prefix(model, units, cfg.eval_batch_size, cpu, amp)
            train_posts, val_posts = plan.fold(k)
            trainer = FoldTrainer(run_k, model, units.subset(train_posts), units.subset(val_posts))
            while trainer.state.epoch < run_k.epochs:
                metrics = trainer.step_epoch(score=curve or trainer.state.epoch + 1 == run.epochs)
            calib.append([str(p) for p in trainer.calib.posts] if trainer.calib else [])
            folds.append({k[4:]: v for k, v in metrics.items() if k.startswith("val_")})
            kept[lr, k] = (trainer.trainable_state(), trainer.calibration)
            fits.append(
                _fit_record(trainer, lr, k, run_k.seed, folds[-1], time.perf_counter() - t0)
            )
            print(
                f"  {name}: lr {lr:g} fold {k} macro-F1 {folds[-1]['macro_f1']:.3f} "
                f"within-AUC {folds[-1]['roc_auc_within']:.3f} "
                f"loss {fits[-1]['loss'][0]:.3f} -> {fits[-1]['loss'][-1]:.3f}",
                flush=True,
            )
            del model, trainer
        sweep.append(_summary(folds, [], time.perf_counter() - started) | {"lr": lr})
        sweep[-1]["fold_calib_posts"] = calib
    best = max(sweep, key=lambda r: r["cv_macro_f1"][0])
    fresh = []
    if heldout:  # only the chosen lr's fold models see the draw: nothing is chosen on it
        model, tok = build_model(cfg)
        fresh_units = encode(tok, heldout[0], cfg).assemble(cfg, heldout[1])
        fresh_units = cache_prefix(model, fresh_units, cfg.eval_batch_size, cpu, amp)
        for k in range(n_folds):
            state, calibration = kept[best["lr"], k]
            load_trainable(model, state)
            scores = score_posts(
                model, fresh_units, cfg.aggregate, cfg.topk, cfg.eval_batch_size, cpu, amp
            )
            fresh.append(post_metrics(fresh_units, scores, calibration))
    row = _summary([], fresh, best["seconds"]) | {k: v for k, v in best.items() if k != "lr"}
    row |= {"lr": best["lr"], "epochs": cfg.epochs, "config": _config_keys(cfg)}
    if len(lrs) > 1:
        row["sweep"] = [{k: r[k] for k in ("lr", "cv_macro_f1", "cv_roc_auc_within", "seconds")}
                        for r in sweep]  # fmt: skip
    row["fits"] = fits
    _print_row(name, row)
    return row


def _fit_record(trainer, lr: float, fold: int, seed: int, val: dict, seconds: float) -> dict:
    """What a fit did: its loss curve, its scores on its own calibration posts (which the
    learned-fit rule may read) and on the fold's validation posts (which it may not)."""
    calib = {}
    if trainer.calib is not None:
        scores = trainer.score_posts(trainer.calib)
        calib = post_metrics(trainer.calib, scores, trainer.calibration)
    check = trainer.fit_check()
    return {
        "lr": lr,
        "fold": fold,
        "seed": seed,
        "learned": check.learned,  # the learned-fit rule's verdict (training/learned.py)
        "loss_ratio": check.loss_ratio,
        "loss": [round(h["train_loss"], 5) for h in trainer.state.history],
        # Validation at each scored epoch: [epoch, macro-F1, within-criterion ROC-AUC].
        "curve": [
            [h["epoch"], round(h["val_macro_f1"], 4), round(h["val_roc_auc_within"], 4)]
            for h in trainer.state.history
            if h["scored"]
        ],
        "calib_roc_auc_within": calib.get("roc_auc_within"),
        "calib_macro_f1": calib.get("macro_f1"),
        "val_macro_f1": val["macro_f1"],
        "val_roc_auc_within": val["roc_auc_within"],
        "val_roc_auc": val["roc_auc"],
        "seconds": round(seconds, 1),
    }


def _config_keys(cfg) -> dict:
    keys = ("pairing", "num_layers", "adapt_layers", "unit", "hypothesis", "epochs")
    return {k: getattr(cfg, k) for k in keys}


def _heldout_draw(n_posts: int, data):
    """A fresh synthetic set from the held-out templates, sized like the data's posts."""
    from nli_tune.redsm5 import synth

    words = int(data.posts["text"].str.split().str.len().mean())
    with tempfile.TemporaryDirectory() as tmp:
        synth.write(tmp, n_posts, HELDOUT_SEED, max(words, 10), templates="heldout")
        fresh = load_redsm5(tmp)
    # Its own id space: a synthetic id may repeat one of the data's.
    posts = fresh.posts.assign(post_id="heldout_" + fresh.posts["post_id"])
    ann = fresh.annotations.assign(post_id="heldout_" + fresh.annotations["post_id"])
    fresh = replace(fresh, posts=posts, annotations=ann)
    return fresh, fresh.pairs()


def _baseline_rows(pairs, texts, plan, n_folds: int, heldout, cfg) -> dict[str, dict]:
    """Majority class and TF-IDF on each fold; TF-IDF is fitted and calibrated on the
    fold's fitting and calibration posts (`calibrated_tfidf`: the designs' trainer holds
    out the same ones) and decided at its calibrated threshold, on the fold's validation
    posts and on the held-out-template draw."""
    rows = {}
    fresh_texts = texts | heldout[0].texts() if heldout else texts  # the draw's posts too
    fresh_pairs = heldout[1].reset_index(drop=True) if heldout else None
    for name in (MAJORITY, TFIDF):
        started, folds, fresh, calib = time.perf_counter(), [], [], []
        for k in range(n_folds):
            train_posts, val_posts = plan.fold(k)
            tr = posts_frame(pairs, train_posts)
            m = baseline_metrics(name, texts, tr, posts_frame(pairs, val_posts), cfg)
            folds.append(_no_evidence(m))
            calib.append(m["calib_posts"])
            if heldout:
                m = baseline_metrics(name, fresh_texts, tr, fresh_pairs, cfg)
                fresh.append(_no_evidence(m))
        rows[name] = _summary(folds, fresh, time.perf_counter() - started)
        rows[name]["fold_calib_posts"] = [list(c) for c in calib]
        _print_row(name, rows[name])
    return rows


def _no_evidence(metrics: dict) -> dict:
    """A baseline scores posts, not units: it shows no evidence sentence."""
    return metrics | {"evidence_hit_at_1": float("nan")}


def _summary(folds: list[dict], fresh: list[dict], seconds: float) -> dict:
    def stat(runs, key):
        vals = np.array([r[key] for r in runs], dtype=float)
        ok = vals[np.isfinite(vals)]
        return [float(ok.mean()), float(ok.std())] if len(ok) else [None, None]

    keys = ("macro_f1", "criterion_macro_f1", "roc_auc_within", "roc_auc", "pr_auc")
    keys += ("evidence_hit_at_1",)
    out = {}
    if folds:
        out = {f"cv_{k}": stat(folds, k) for k in keys}
        out["cv_fold_macro_f1"] = [float(r["macro_f1"]) for r in folds]
        out["cv_fold_roc_auc_within"] = [float(r["roc_auc_within"]) for r in folds]
    if fresh:
        out |= {f"heldout_{k}": stat(fresh, k) for k in keys}
    out["seconds"] = round(seconds, 1)
    return out


def _fmt(pair) -> str:
    mean, std = pair
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _print_row(name: str, row: dict) -> None:
    print(
        f"{name:<30} CV macro-F1 {_fmt(row['cv_macro_f1'])}  ROC-AUC "
        f"{_fmt(row['cv_roc_auc'])}  within-AUC {_fmt(row['cv_roc_auc_within'])}  PR-AUC "
        f"{_fmt(row['cv_pr_auc'])}  hit@1 {_fmt(row['cv_evidence_hit_at_1'])}  "
        f"held-out macro-F1 {_fmt(row.get('heldout_macro_f1', (None, None)))}  "
        f"{row['seconds']:.0f}s",
        flush=True,
    )


def markdown_table(result: dict) -> str:
    lines = [
        "| design | lr | CV macro-F1 | CV ROC-AUC | CV within-criterion ROC-AUC | CV PR-AUC | "
        "CV evidence hit@1 | held-out-template macro-F1 | held-out within ROC-AUC | "
        "wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        lr = f"{row['lr']:g}" if "lr" in row else "-"
        lines.append(
            f"| {name} | {lr} | {_fmt(row['cv_macro_f1'])} | {_fmt(row['cv_roc_auc'])} | "
            f"{_fmt(row['cv_roc_auc_within'])} | {_fmt(row.get('cv_pr_auc', (None, None)))} | "
            f"{_fmt(row['cv_evidence_hit_at_1'])} | "
            f"{_fmt(row.get('heldout_macro_f1', (None, None)))} | "
            f"{_fmt(row.get('heldout_roc_auc_within', (None, None)))} | {row['seconds']:.0f} s |"
        )
    for name, row in result["rows"].items():
        if "sweep" in row:  # every lr the design trained at, on CV only
            cells = ", ".join(
                f"{r['lr']:g}: {r['cv_macro_f1'][0]:.3f} / {r['cv_roc_auc_within'][0]:.3f} "
                f"({r['seconds']:.0f} s)"
                for r in row["sweep"]
            )
            lines.append(f"\n- lr sweep of *{name}* (CV macro-F1 / within ROC-AUC): {cells}")
    rule = rule_summary(result)
    if rule:
        lines.append(f"\n{rule}")
    lines.append(
        f"\n{result['folds']} post-grouped folds of {result['data']} (fingerprint "
        f"{result['fingerprint']}), split seed {result['split_seed']}, each fold fit its own "
        f"seed from {result['seed']}; held-out-template draw of "
        f"{result['heldout_posts']} posts; {result['machine']}. Every row but the majority "
        f"class is decided at a Platt + macro-F1 threshold fitted on the same held-out "
        f"calibration posts of each fold's training posts."
    )
    return "\n".join(lines) + "\n"


def rule_summary(result: dict) -> str:
    """How the learned-fit rule splits this file's fits, against what it may not read:
    each fit's validation within-criterion ROC-AUC beside TF-IDF's on the same fold."""
    tfidf = result["rows"].get(TFIDF, {}).get("cv_fold_roc_auc_within")
    fits = [f for row in result["rows"].values() for f in row.get("fits", [])]
    if not tfidf or not fits:
        return ""
    worse = [f for f in fits if f["val_roc_auc_within"] < tfidf[f["fold"]]]
    better = [f for f in fits if f["val_roc_auc_within"] >= tfidf[f["fold"]]]
    cfg = TrainConfig.from_dict(result.get("config_overrides") or {})  # its thresholds

    def failed(group):
        return sum(not check_fit(f["loss"], f["calib_roc_auc_within"], cfg).learned for f in group)

    return (
        f"Learned-fit rule over these {len(fits)} fits: it called {failed(fits)} failed; "
        f"{failed(worse)} of the {len(worse)} whose validation within-criterion ROC-AUC is "
        f"below TF-IDF's on the same fold, {failed(better)} of the {len(better)} at or above."
    )


def _machine() -> str:
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.processor() or platform.machine()}, {threads} torch threads, {device}"
