"""The speed figures of `python -m nli_tune.bench` (the command: nli_tune/bench.py): each
measured in-process or by timing a real search, then set against its goal and, where one
ran, its peer. Timed goals live here, not in tests."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import numpy as np
import torch

from nli_tune.core.config import TrainConfig
from nli_tune.evaluation.scoring import unit_criterion_pairs
from nli_tune.model.classifier import build_model
from nli_tune.model.precision import autocast_dtype
from nli_tune.pairs.encoding import bucketed_batches, encode_units, pair_lengths
from nli_tune.redsm5.load import load_redsm5
from nli_tune.training.fold_trainer import FoldTrainer

# A goal's figure -> (ours, the peer's) printed beside it: the peer ran in the same bench.
PEERS = {
    "padding_efficiency": ("padding_efficiency", "padding_efficiency_random_longest"),
    "trainer_speedup_vs_hf": ("trainer_tokens_per_s_fold", "hf_trainer_tokens_per_s"),
    "trainer_f1_gap": ("trainer_macro_f1", "hf_trainer_macro_f1"),
    "fold_parallel_ratio": ("fold_parallel_epoch_s", "fold_alone_s"),
    "asha_epoch_savings": ("epochs_run", "no_asha_epochs_run"),
    "asha_best_loss": ("best_metric", "no_asha_best_metric"),
}

# Goals on a 2-core CPU box: the in-process figures run the 270M at --num-layers (3)
# with nli pairs (the loop's machinery: tokens/s, padding, ours against
# transformers.Trainer); the search figures run the README's main job as shipped.
GOALS = {
    "data_seconds": ("<=", 30.0),  # synth + validate + encode 1,484 posts x 9 criteria
    "segment_pathological_s": ("<=", 2.0),  # 4 x 100k-char texts with no sentence to cut
    "train_tokens_per_s": (">=", 1000.0),  # forward + backward + AdamW, bf16 autocast if native
    "score_tokens_per_s": (">=", 3000.0),  # no-grad scoring
    "peak_rss_gib": ("<=", 8.0),  # whole process
    "padding_efficiency": (">=", 0.95),  # real tokens / tokens our length-bucketed batches run
    "trainer_speedup_vs_hf": (">=", 1.5),  # fold trainer real tokens/s / transformers.Trainer's
    "trainer_f1_gap": ("<=", 0.02),  # |macro-F1 ours - transformers.Trainer's|, same fold
    "fold_parallel_ratio": ("<=", 1.15),  # K folds side by side in a trial / one fold alone
    "per_trial_overhead_s": ("<=", 8.0),  # a trial's wall time minus its folds' compute
    "search_overhead_fraction": ("<=", 0.10),  # share of the search with its slots idle
    "asha_epoch_savings": (">=", 0.5),  # 1 - epochs run / (trials x max epochs)
    "asha_best_loss": ("<=", 0.01),  # best searcher metric without ASHA - with (--asha-off)
    "default_search_s": ("<=", 480.0),  # the README's main job, Ray start included (12 min at most)
    "best_cv_roc_auc": (
        ">=",
        0.92,
    ),  # the main job's best trial (by the searcher's metric; 0.88 at least)
    # Spearman rho, trials' value at ASHA's first rung vs at their end, on the metric ASHA
    # prunes on (--asha-off: every trial runs to the end and scores every epoch)
    "first_rung_rank_correlation": (">=", 0.6),
}


def padding_figures(
    lengths: np.ndarray, batch_size: int, max_length: int, rng: np.random.Generator
) -> dict[str, float]:
    """Real (non-pad) tokens over the tokens a batching runs through the model, for one
    epoch's examples: ours (length-bucketed, padded to each batch's longest), padding every
    pair to max_length, and padding random batches to their longest."""
    real = int(lengths.sum())

    def processed(batches: list[np.ndarray]) -> int:
        return int(sum(len(b) * int(lengths[b].max()) for b in batches))

    order = rng.permutation(len(lengths))
    shuffled = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return {
        "real_tokens": real,
        "padding_efficiency": real / processed(bucketed_batches(lengths, batch_size, rng)),
        "padding_efficiency_pad_to_max_length": real / (len(lengths) * max_length),
        "padding_efficiency_random_longest": real / processed(shuffled),
    }


def unjudged(hf_epochs: int, cpus: int, folds: int | None, main_job: bool = True) -> frozenset[str]:
    """Goals this run measures but cannot judge, reported as such."""
    keys = set() if main_job else {"best_cv_roc_auc"}  # a cut search stops short of it
    if hf_epochs == 1:
        # After one epoch both loops' models sit near P = 0.5 and land on either side of it
        # (measured: ours called every pair matched, HF's none, macro-F1 0.085 against
        # 0.476), so the gap says nothing of the loops; two epochs (the default) judge it.
        keys.add("trainer_f1_gap")
    if folds is not None and cpus < folds:  # no free CPU slot per fold: they share cores
        keys.add("fold_parallel_ratio")
    return frozenset(keys)


def goal_table(
    results: dict[str, float], report_only: frozenset[str] = frozenset()
) -> tuple[list[str], bool]:
    """One line per goal measured: its value, where a peer ran in the same bench our
    figure, the peer's and their ratio, then the goal and whether it is met ("report" for
    the keys in report_only: this machine or this run cannot judge them); and whether
    every judged goal is met."""
    lines = [f"  {'figure':<26} {'value':>9} {'ours':>9} {'peer':>9} {'ratio':>6}   goal"]
    ok = True
    for key, (op, goal) in GOALS.items():
        if key not in results:
            continue
        value = results[key]
        met = bool(value <= goal if op == "<=" else value >= goal)
        ok &= met or key in report_only
        ours, peer = PEERS.get(key, ("", ""))
        side = f"{'':>9} {'':>9} {'':>6}"
        if ours in results and peer in results:
            ratio = results[ours] / results[peer]
            side = f"{results[ours]:9.4g} {results[peer]:9.4g} {ratio:6.2f}"
        verdict = "report" if key in report_only else "met" if met else "MISSED"
        lines.append(f"  {key:<26} {value:9.4g} {side}   {op} {goal:g}  {verdict}")
    return lines, ok


def all_figures(args) -> dict[str, float]:
    """Every figure `python -m nli_tune.bench` prints, measured as `args` say."""
    results, tok = _step_figures(args)
    if args.hf_epochs > 0:
        results |= _trainer_figures(args, tok)
    if not args.skip_search:
        if not args.quick:  # the quick search runs other epochs than the ones timed here
            results |= _fold_figures(tok)
        mode = "quick" if args.quick else "main-job" if args.main_job else "default"
        results |= _search_figures(mode, args.asha_off, args.keep)
        if "fold_alone_s" in results:
            results["fold_parallel_ratio"] = (
                results["fold_parallel_epoch_s"] / results["fold_alone_s"]
            )
    return results


def _step_figures(args) -> tuple[dict[str, float], object]:
    """Data preparation at the real scale, segmentation of pathological text, padding,
    training and scoring throughput of the in-process trainer; and the tokenizer."""
    from nli_tune.redsm5 import synth

    results: dict[str, float] = {}
    cfg = TrainConfig(
        calibration="none",
        model=args.model,
        num_layers=args.num_layers,
        batch_size=args.batch_size,
        max_length=args.max_length,
        pairing="nli",  # a step of (unit, criterion) pairs, as these goals were set on
        neg_ratio=3.0,
    )
    model, tok = build_model(cfg)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        synth.write(tmp, 1484, seed=0)
        data = load_redsm5(tmp)
        units = encode_units(tok, data, cfg)
    results["data_seconds"] = time.perf_counter() - t0
    print(
        f"data: 1,484 posts -> {len(units)} {cfg.unit} units tokenized and labelled in "
        f"{results['data_seconds']:.1f}s"
    )

    results["segment_pathological_s"] = _pathological_segmentation_seconds()
    print(f"segmentation of 4 letterless 100k-char texts: {results['segment_pathological_s']:.2f}s")

    trainer = FoldTrainer(cfg, model, units, None)
    rng = np.random.default_rng(0)
    examples = trainer.evidence_examples(rng)
    lengths = pair_lengths(trainer.train, examples[:, 0], examples[:, 1])
    results |= padding_figures(lengths, cfg.batch_size, cfg.max_length, np.random.default_rng(1))
    print(
        f"padding: real tokens / tokens run {results['padding_efficiency']:.3f} (ours), "
        f"{results['padding_efficiency_random_longest']:.3f} (random batches), "
        f"{results['padding_efficiency_pad_to_max_length']:.3f} (pad to max_length)"
    )
    batches = [examples[b] for b in bucketed_batches(lengths, cfg.batch_size, rng)]
    model.train()
    for batch in batches[:2]:  # warm-up: the first CPU steps pay one-off kernel set-up
        trainer.step("evidence", batch)
    t0, tokens = time.perf_counter(), 0
    for batch in batches[2 : 2 + args.steps]:
        tokens += trainer.step("evidence", batch)[1]
    results["train_tokens_per_s"] = tokens / (time.perf_counter() - t0)
    sub = units.subset(units.posts[:40])
    pairs, crits = unit_criterion_pairs(np.flatnonzero(~sub.external))
    t0 = time.perf_counter()
    trainer.score_posts(sub)
    seconds = time.perf_counter() - t0
    results["score_tokens_per_s"] = int(pair_lengths(sub, pairs, crits).sum()) / seconds
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    amp = autocast_dtype(cfg.precision, torch.device("cpu"))
    print(
        f"model {args.model} layers {args.num_layers} threads {torch.get_num_threads()} "
        f"precision {'bf16' if amp else 'fp32'}"
    )
    return results, tok


def _pathological_segmentation_seconds() -> float:
    """Sentence splitting of texts where every candidate cut is rejected: it must stay
    linear (a rescan per rejected cut made such a post take minutes)."""
    from nli_tune.units.segment import sentence_spans

    texts = ["! " * 50_000, "." * 100_000 + " x", " " * 100_000 + "a", "😭 " * 50_000]
    t0 = time.perf_counter()
    for text in texts:
        sentence_spans(text)
    return time.perf_counter() - t0


def _trainer_figures(args, tok) -> dict[str, float]:
    """Our fold trainer against transformers.Trainer (measure/hf_trainer.py) on fold 0 of the
    bundled sample, with the search's defaults (sentence units, 3 negatives per positive)."""
    from nli_tune import SAMPLE_DIR
    from nli_tune.measure.hf_trainer import compare_with_hf_trainer
    from nli_tune.redsm5.folds import make_folds

    cfg = TrainConfig(
        model=args.model,
        num_layers=args.num_layers,
        epochs=args.hf_epochs,
        pairing="nli",  # the comparison trains the 2-class head of an nli pair
        neg_ratio=3.0,
    )
    data = load_redsm5(SAMPLE_DIR)
    units = encode_units(tok, data, cfg)
    plan = make_folds(data.pairs(), cfg.folds, cfg.test_fraction, cfg.split_seed)
    train_posts, val_posts = plan.fold(0)
    f = compare_with_hf_trainer(cfg, units.subset(train_posts), units.subset(val_posts))
    print(
        f"trainer: {f['trainer_tokens_per_s_fold']:.0f} real tokens/s against "
        f"transformers.Trainer's {f['hf_trainer_tokens_per_s']:.0f} (x"
        f"{f['trainer_speedup_vs_hf']:.2f}; its batches' real/run tokens "
        f"{f['hf_trainer_padding_efficiency']:.3f}), fold 0, {cfg.epochs} epochs of "
        f"{f['trainer_examples'] / cfg.epochs:.0f} examples; val macro-F1 "
        f"{f['trainer_macro_f1']:.3f} against {f['hf_trainer_macro_f1']:.3f}"
    )
    return f


def _fold_figures(tok) -> dict[str, float]:
    """The main job's first trial (its space's first fixed point), epoch 1 of each fold, run
    one fold after another in this process on a fold worker's torch threads: one fold
    alone (the slowest) and the K folds serially (the sum; the seed ran them so, on every
    thread: 68 s against 112 s here). The search then times the same epoch with the K
    folds side by side."""
    from nli_tune.measure.hf_trainer import fold_epoch_seconds
    from nli_tune.measure.search_timing import MAIN_JOB_SPACE
    from nli_tune.redsm5.folds import make_folds
    from nli_tune.study.space import load_space

    space = load_space(str(MAIN_JOB_SPACE))
    cfg = space.trial_config(space.points_to_evaluate[0])
    data = load_redsm5(cfg.data_dir)
    units = encode_units(tok, data, cfg)
    plan = make_folds(data.pairs(), space.folds, cfg.test_fraction, cfg.split_seed)  # the search's
    worker_threads = space.worker_threads  # as tuning.trial gives a fold worker
    alone = fold_epoch_seconds(cfg, units, plan, worker_threads)
    print(
        f"folds: epoch 1 of {space.folds} folds, each alone on {worker_threads} thread(s): "
        f"{' '.join(f'{s:.0f}s' for s in alone)}; one after another {sum(alone):.0f}s"
    )
    return {"folds": space.folds, "fold_alone_s": max(alone), "folds_serial_s": sum(alone)}


def _search_figures(mode: str, asha_off: bool = False, keep: str | None = None) -> dict:
    from pathlib import Path

    from nli_tune.core.outputs import read_table
    from nli_tune.measure.search_timing import CUTS, MAIN_JOB_SPACE, asha_comparison, run_search

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(keep) if keep else Path(tmp)  # --keep: its outputs stay there
        workdir.mkdir(parents=True, exist_ok=True)
        figures = run_search(MAIN_JOB_SPACE, workdir, CUTS[mode])
        figures.pop("run_dir")
    if asha_off and mode != "quick":
        with tempfile.TemporaryDirectory() as tmp:
            twin = run_search(MAIN_JOB_SPACE, Path(tmp), (CUTS[mode] or {}) | {"scheduler": "none"})
            epochs = read_table(Path(twin.pop("run_dir")) / "epochs.csv")
        figures["no_asha_trials_table"] = twin["trials_table"]
        figures |= asha_comparison(figures, twin)
        figures |= _rung_figures(epochs, CUTS[mode])
    if mode == "main-job":  # only the job as shipped says how long the README's job takes
        figures["default_search_s"] = figures.pop("search_s")
    if mode == "quick":  # no ASHA there: nothing to save
        figures.pop("asha_epoch_savings")
    print(
        f"search: {figures['trials']} trial(s), {figures['trials_at_once']} at a time; per trial "
        f"{figures['per_trial_compute_s']:.0f}s of fold compute + "
        f"{figures['per_trial_overhead_s']:.0f}s overhead (medians); worker peak RSS "
        f"{figures['peak_rss_mb_per_worker']:.0f} MB, {figures['tokens_per_s_per_worker']:.0f} "
        f"tokens/s"
    )
    return figures


def rungs_main(argv: list[str]) -> int:
    """rung_rank_correlation of a finished search (best run with `scheduler: none`, so that
    every trial ran to the end and scored every epoch): each epoch but the last, per metric."""
    from pathlib import Path

    from nli_tune.core.errors import UserError
    from nli_tune.core.outputs import read_table
    from nli_tune.reporting.fidelity import rung_rank_correlation

    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench rungs", description=rungs_main.__doc__
    )
    p.add_argument("run_dir", help="the search's output folder (OUTPUT/<name>)")
    p.add_argument("--output", help="also write the table to this JSON file")
    args = p.parse_args(argv)
    path = Path(args.run_dir) / "epochs.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found; pass the folder a finished search wrote")
    epochs = read_table(path)
    ends = epochs.groupby("trial_id")["epoch"].max()
    table = rung_rank_correlation(epochs, sorted(int(e) for e in epochs["epoch"].unique())[:-1])
    print(f"{len(ends)} trials; last epochs {sorted(set(ends))}")
    _print_rungs(table)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"trials": int(len(ends)), "rung_rank_correlation": table}, f, indent=2)
    return 0


def _print_rungs(table: dict) -> None:
    """rung_rank_correlation's table, a line per rung and metric."""
    for rung, per_metric in table.items():
        for metric, v in per_metric.items():
            print(
                f"  epoch {rung} {metric:<18} rho {v['spearman']:+.2f}  fold std "
                f"{v['fold_std']:.3f}  trials {v['trials']}"
            )


def _rung_figures(epochs, cut: dict | None) -> dict:
    """rung_rank_correlation of the main job's rungs (as cut) from a run without ASHA, and
    the first rung's rho on the metric ASHA prunes on; printed as a table."""
    from nli_tune.measure.search_timing import MAIN_JOB_SPACE
    from nli_tune.reporting.fidelity import rung_rank_correlation
    from nli_tune.study.space import load_space

    space = load_space(str(MAIN_JOB_SPACE))
    if cut and "epochs" in cut.get("fixed", {}):
        space.fixed["epochs"] = cut["fixed"]["epochs"]
    table = rung_rank_correlation(epochs, space.rungs())
    print(f"rungs (without ASHA, {epochs['trial_id'].nunique()} trials to the end):")
    _print_rungs(table)
    first = table[str(space.rungs()[0])][space.scheduler_metric]["spearman"]
    return {"rung_rank_correlation": table, "first_rung_rank_correlation": first}
