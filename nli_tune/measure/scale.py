"""What a real-size run costs: each stage timed at 150, 500 and 1,484 synthetic posts (and
1,484 at twice the length), with the growth exponent of each in the number of posts.

    python -m nli_tune.bench scale [--sizes 150 500 1484] [--long 1484] [--output F]

Each size runs in a fresh process (so that its peak memory is its own), on a synthetic
ReDSM5-shaped set (`data synth`, ~295 words a post): the frozen bottom layers once for
every unit, one training epoch of the default config on the non-test posts (calibration
included), scoring the test posts, `predict` on them as new posts (tokenising included),
and, unless --skip-search, one search trial (a 1-trial, 1-epoch search of the default
config over 3 folds), with the trial's wall time, a fold worker's peak RSS, the driver's
peak RSS and the bytes of the trial data in Ray's object store. A stage that grows faster
than linearly in posts (exponent above 1.1) is flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

WORDS = 295  # mean words a post, as ReDSM5's (data synth's default)
STAGES = ("prefix_s", "train_epoch_s", "score_s", "predict_s", "trial_wall_s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 500, 1484], help="posts")
    p.add_argument("--long", type=int, nargs="*", default=[1484], help="sizes also at 2x length")
    p.add_argument("--skip-search", action="store_true", help="no search trial")
    p.add_argument("--output", default="scale.json", help="JSON results (and a .md table)")
    p.add_argument("--one", nargs=2, type=int, metavar=("POSTS", "WORDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # the child: one size, its JSON on stdout's last line
        print(json.dumps(measure(*args.one, search=not args.skip_search)))
        return 0
    runs = []
    for posts, words in [(n, WORDS) for n in args.sizes] + [(n, 2 * WORDS) for n in args.long]:
        print(f"scale: {posts} posts x ~{words} words ...", flush=True)
        cmd = [sys.executable, "-m", "nli_tune.bench", "scale", "--one", str(posts), str(words)]
        r = subprocess.run(cmd + (["--skip-search"] if args.skip_search else []),
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"scale at {posts} posts failed: {r.stderr[-3000:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print("  " + ", ".join(f"{k} {v}" for k, v in runs[-1].items()), flush=True)
    result = {"runs": runs, "exponents": exponents([r for r in runs if r["words"] == WORDS])}
    out = Path(args.output)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def exponents(runs: list[dict]) -> dict[str, float]:
    """The slope of log(value) against log(posts), per measured quantity."""
    posts = np.log([r["posts"] for r in runs])
    out = {}
    for key in runs[0]:
        values = np.array([r.get(key) or np.nan for r in runs], dtype=float)
        if key not in ("posts", "words") and len(runs) >= 2 and np.all(values > 0):
            out[key] = round(float(np.polyfit(posts, np.log(values), 1)[0]), 2)
    return out


def measure(posts: int, words: int, search: bool = True) -> dict:
    """Every stage at one size (run in its own process)."""
    import torch

    from nli_tune.core.config import TrainConfig
    from nli_tune.model.classifier import build_model
    from nli_tune.model.precision import autocast_dtype
    from nli_tune.model.prefix import cache_prefix
    from nli_tune.pairs.encoding import encode
    from nli_tune.redsm5 import synth
    from nli_tune.redsm5.folds import split_test
    from nli_tune.redsm5.load import load_redsm5
    from nli_tune.training.fold_trainer import FoldTrainer

    out: dict = {"posts": posts, "words": words}
    with tempfile.TemporaryDirectory() as tmp:
        synth.write(tmp, posts, seed=0, mean_words=words)
        data = load_redsm5(tmp)
        cfg = TrainConfig(epochs=1, data_dir=tmp)
        cpu, amp = torch.device("cpu"), autocast_dtype(cfg.precision, torch.device("cpu"))
        pairs = data.pairs()
        train_posts, test_posts = split_test(pairs, cfg.test_fraction, cfg.split_seed)
        model, tok = build_model(cfg)
        t0 = time.perf_counter()
        units = encode(tok, data, cfg).assemble(cfg, pairs)
        out["encode_s"] = round(time.perf_counter() - t0, 1)
        out["units"] = len(units)
        out["tokens"] = int(units.lengths.sum())
        t0 = time.perf_counter()
        units = cache_prefix(model, units, cfg.eval_batch_size, cpu, amp)
        out["prefix_s"] = round(time.perf_counter() - t0, 1)
        trainer = FoldTrainer(cfg, model, units.subset(train_posts), None)
        t0 = time.perf_counter()
        trainer.fit()  # one epoch, then the calibration posts scored and fitted
        out["train_epoch_s"] = round(trainer.state.history[0]["epoch_seconds"], 1)
        out["calibrate_s"] = round(time.perf_counter() - t0 - out["train_epoch_s"], 1)
        out["train_tokens"] = int(trainer.state.history[0]["tokens_per_s"]
                                  * trainer.state.history[0]["epoch_seconds"])  # fmt: skip
        test = units.subset(test_posts)
        t0 = time.perf_counter()
        trainer.score_posts(test)
        out["score_s"] = round(time.perf_counter() - t0, 1)
        out["score_posts"] = len(test_posts)
        new = data.posts[data.posts["post_id"].isin(set(test_posts))]
        out |= _predict(model, cfg, trainer.calibration, new, Path(tmp))
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if search:
            out |= _search_trial(Path(tmp))
    return out


def _predict(model, cfg, calibration, posts, tmp: Path) -> dict:
    """`python -m nli_tune.predict` on `posts` as new posts: its own posts/s (its last
    progress line: tokenising and scoring, model load excluded) and its wall time."""
    from nli_tune.model.classifier import save_model

    save_model(model, cfg, tmp / "model", calibration)
    (tmp / "in").mkdir()
    posts.to_csv(tmp / "in" / "posts.csv", index=False)
    cmd = [sys.executable, "-m", "nli_tune.predict", "--model", str(tmp / "model"), "--input",
           str(tmp / "in" / "posts.csv"), "--output", str(tmp / "scores.csv"),
           "--batch-posts", str(len(posts))]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"predict failed: {r.stderr[-2000:]}")
    rate = float(re.findall(r"([\d.]+) posts/s", r.stdout)[-1])
    return {"predict_s": round(time.perf_counter() - t0, 1), "predict_posts_per_s": rate}


def _search_trial(data_dir: Path) -> dict:
    """One search trial of the default config: 1 trial, 1 epoch, 3 folds, no confirmation."""
    space = {
        "name": "scale",
        "num_samples": 1,
        "folds": 3,
        "scheduler": "none",
        "confirm": "none",
        "params": {"pooling": {"choice": ["mean"]}},
        "fixed": {"epochs": 1},
        "resources": {"cpus_per_worker": 0.5, "driver_cpus": 0.25},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scale.yaml"
        path.write_text(yaml.safe_dump(space))
        cmd = [sys.executable, "-m", "nli_tune.search", "--space", str(path), "--data-dir",
               str(data_dir), "--output", str(Path(tmp) / "out"), "--mlflow-uri",
               f"sqlite:///{Path(tmp) / 'mlflow.db'}", "--no-report", "--no-dashboard"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = 0
        while proc.poll() is None:  # the driver's high-water mark, read while it lives
            peak = max(peak, _vm_hwm_mb(proc.pid))
            time.sleep(0.5)
        log = proc.stdout.read()
        if proc.returncode != 0:
            raise RuntimeError(f"the search trial failed: {log[-3000:]}")
        import pandas as pd

        row = pd.read_csv(Path(tmp) / "out" / "scale" / "cv_results.csv").iloc[0]
        shared = json.loads((Path(tmp) / "out" / "scale" / "search.json").read_text())
        return {
            "search_s": round(time.perf_counter() - t0, 1),
            "trial_wall_s": round(float(row["wall_s"]), 1),
            "trial_compute_s": round(float(row["compute_s"]), 1),
            "worker_peak_rss_mb": round(float(row["worker_peak_rss_mb"])),
            "driver_peak_rss_mb": peak,
            "object_store_mb": round(shared.get("trial_data_bytes", 0) / 2**20, 1),
        }


def _vm_hwm_mb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def markdown(result: dict) -> str:
    runs = result["runs"]
    keys = [k for k in runs[0] if k not in ("posts", "words")]
    lines = ["| posts | words | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for r in runs:
        lines.append(
            f"| {r['posts']} | {r['words']} | " + " | ".join(str(r.get(k)) for k in keys) + " |"
        )
    exp = result["exponents"]
    lines.append("| exponent in posts | | " + " | ".join(
        f"{exp[k]:.2f}{' (!)' if exp.get(k, 0) > 1.1 else ''}" if k in exp else "" for k in keys
    ) + " |")  # fmt: skip
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    return "\n".join(lines) + f"\n\nCPU threads: {threads}; `python -m nli_tune.bench scale`.\n"
