"""Speed and memory goals, measured (never asserted in timed tests).

    python -m nli_tune.bench [--quick | --main-job] [--output bench.json] [--skip-search]
                             [--hf-epochs 2] [--asha-off]
    python -m nli_tune.bench quality [--folds 3]     # quality side by side: see quality.py
    python -m nli_tune.bench gpu [--output F]        # 1B-shape MFU on a GPU: see measure/gpu.py
    python -m nli_tune.bench learning [--seeds ...]  # does the default learn: measure/learning.py
    python -m nli_tune.bench rungs RUN_DIR [--output F]  # can a search's epochs be trusted
    python -m nli_tune.bench carry RUN_DIR [--seeds ...]  # does the exported config hold up
    python -m nli_tune.bench scale [--sizes 150 500 1484]  # what a real-size run costs

Measures, on this machine: data generation + validation + pair encoding at the real
ReDSM5 scale (1,484 posts), training throughput (tokens/s) and scoring throughput of the
pair classifier, padding, and peak resident memory; our fold trainer against
transformers.Trainer on one fold (measure/hf_trainer.py); each fold's first epoch alone and the
folds one after another; then runs the README's main job, cut to fit (see
measure/search_timing.py), and reads each trial's overhead, the search's idle share, the epochs
ASHA saved and the same first epoch with the folds side by side from it (--asha-off: and
from the same search without ASHA). Prints each figure against its goal, beside its peer
where one ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nli_tune.core.errors import run_cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench",
        description=__doc__.split("\n")[0],
        epilog="Also: `python -m nli_tune.bench quality` (the designs' quality side by side on "
        "the same folds) and `python -m nli_tune.bench gpu` (training MFU of a 1B-shape model "
        "on a CUDA GPU); each has its own --help.",
    )
    p.add_argument("--model", default="gemma-3-270m", help="model preset/id (default gemma-3-270m)")
    p.add_argument("--num-layers", type=int, default=3, help="decoder layers kept (default 3)")
    p.add_argument("--steps", type=int, default=8, help="timed training batches (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per batch (default 16)")
    p.add_argument("--max-length", type=int, default=192, help="tokens per pair (default 192)")
    p.add_argument(
        "--output", "--json", dest="output", help="also write every figure to this JSON file"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="search figures from 1 one-epoch trial (about 3.5 min in all here; default: 4 "
        "trials of up to 3 epochs with ASHA)",
    )
    mode.add_argument(
        "--main-job",
        action="store_true",
        help="run the README's main job as shipped for default_search_s (its search about 8 min "
        "here: benchmarks/bench-main-job.json)",
    )
    p.add_argument(
        "--hf-epochs",
        type=int,
        help="epochs of one fold that our trainer and transformers.Trainer each train for "
        "the speed-up (default 2, 1 with --quick; about 1 min here; 0 skips it)",
    )
    p.add_argument(
        "--asha-off",
        action="store_true",
        help="also run the same seeded search without ASHA (about 20 min more here), for the "
        "epochs ASHA saved and the best score it gave up",
    )
    p.add_argument("--skip-search", action="store_true", help="in-process figures only (no search)")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="run the search in DIR and keep its outputs (DIR/outputs/<name>: `bench carry` "
        "reads them); default: a temporary folder",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quality"]:  # the side-by-side quality table (see measure/quality.py)
        from nli_tune.measure import quality

        return quality.main(argv[1:])
    if argv[:1] == ["rungs"]:  # rung_rank_correlation of a finished search's epochs.csv
        from nli_tune.measure.speed import rungs_main

        return rungs_main(argv[1:])
    if argv[:1] == ["learning"]:  # does the default learn? (see measure/learning.py)
        from nli_tune.measure import learning as bench_learning

        return bench_learning.main(argv[1:])
    if argv[:1] == ["scale"]:  # what each stage costs from 150 to 1,484 posts
        from nli_tune.measure import scale

        return scale.main(argv[1:])
    if argv[:1] == ["carry"]:  # does the exported config train as the search said?
        from nli_tune.measure import carry

        return carry.main(argv[1:])
    if argv[:1] == ["gpu"]:  # the GPU bench: refuses to run without CUDA (see measure/gpu.py)
        from nli_tune.measure import gpu as bench_gpu

        return bench_gpu.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.hf_epochs is None:
        args.hf_epochs = 1 if args.quick else 2
    from nli_tune.measure.speed import GOALS, all_figures, goal_table, unjudged  # torch: seconds

    results = all_figures(args)
    report_only = unjudged(args.hf_epochs, os.cpu_count() or 1, results.get("folds"), args.main_job)
    lines, ok = goal_table(results, report_only)
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {"results": results, "goals": GOALS, "all_met": ok}, f, indent=2, default=float
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
