"""Does the answer hold? `train` on a search's exported config with several training seeds,
its first fit as it was (no learned-fit check) and the fit it keeps (the rule and its
retries), beside the search's fold ensemble, TF-IDF on the same test posts and the CV
estimate the search exported.

    python -m nli_tune.bench carry OUTPUT/<name> [--seeds 0 1 2 3] [--retries 2] [--output F]

Each seed is one `python -m nli_tune.train --config OUTPUT/<name>/best_config.yaml` run
with `seed` set (split_seed stays the search's: every run tests on the search's held-out
posts). Where the first fit learned, the kept fit is that fit; where it did not, the first
fit is also trained alone (`--retries 0`) so that both are scored on the test posts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from nli_tune.core.config import read_mapping
from nli_tune.core.errors import UserError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    best_file = run_dir / "best_config.yaml"
    if not best_file.is_file():
        raise UserError(f"{run_dir}: no best_config.yaml; pass a finished search's folder")
    best = read_mapping(best_file)
    search = best.get("search") or {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            kept = _train(best, seed, args.retries, Path(tmp) / f"seed{seed}")
            first = kept if kept["kept_attempt"] == 0 else _train(best, seed, 0, Path(tmp) / "f")
            rows.append({"seed": seed, "first_fit": _figures(first), "kept_fit": _figures(kept)})
            _print_seed(rows[-1])
    ensemble = run_dir / "ensemble" / "metrics.json"
    result = {
        "run_dir": str(run_dir),
        "config": {k: v for k, v in best.items() if k != "search"},
        "cv": {k: search.get(k) for k in (search.get("selected_by"), "cv_macro_f1", "fits")},
        "selected_by": search.get("selected_by"),
        "seeds": rows,
        "ensemble": _figures(json.loads(ensemble.read_text())) if ensemble.is_file() else None,
        "summary": _summary(rows),
    }
    print(json.dumps(result["summary"], indent=1))
    if result["ensemble"]:
        e = result["ensemble"]
        print(
            f"fold ensemble: test macro-F1 {e['test_macro_f1']:.3f} (TF-IDF "
            f"{e['tfidf_macro_f1']:.3f}), within-criterion ROC-AUC {e['test_roc_auc_within']:.3f}"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench carry", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("run_dir", help="a finished search's folder (OUTPUT/<name>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="training seeds")
    p.add_argument("--retries", type=int, default=2, help="train's --retries (default 2)")
    p.add_argument("--output", help="write every figure to this JSON file")
    return p


def _train(best: dict, seed: int, retries: int, out: Path) -> dict:
    """metrics.json of one `train` run of the exported config at training seed `seed`."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(best | {"seed": seed}, sort_keys=False))
    r = subprocess.run(
        [sys.executable, "-m", "nli_tune.train", "--config", str(config), "--output",
         str(out / "run"), "--retries", str(retries), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"train (seed {seed}) failed: {r.stderr[-2000:]}")
    return json.loads((out / "run" / "metrics.json").read_text())


def _figures(metrics: dict) -> dict:
    test, tfidf = metrics["test"], metrics["baselines"]["tfidf_logreg"]
    attempts = metrics.get("attempts") or []
    kept = attempts[metrics.get("kept_attempt", 0)] if attempts else {}
    return {
        "learned": kept.get("learned"),
        "attempts": len(attempts),
        "loss_ratio": kept.get("loss_ratio"),
        "calib_roc_auc_within": kept.get("calib_roc_auc_within"),
        "test_macro_f1": test["macro_f1"],
        "test_macro_f1_ci95": test["macro_f1_ci95"],
        "test_roc_auc_within": test["roc_auc_within"],
        "tfidf_macro_f1": tfidf["macro_f1"],
        "model_minus_tfidf_ci95": metrics["model_minus_tfidf"]["ci95"],
        "test_posts": metrics["data"]["test_posts"],
    }


def _summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("first_fit", "kept_fit"):
        fits = [r[key] for r in rows]
        out[key] = {
            "learned": sum(bool(f["learned"]) for f in fits),
            "at_or_above_tfidf": sum(f["test_macro_f1"] >= f["tfidf_macro_f1"] for f in fits),
            "of": len(fits),
            "test_macro_f1": [round(f["test_macro_f1"], 4) for f in fits],
            "test_roc_auc_within": [round(f["test_roc_auc_within"], 4) for f in fits],
        }
    return out


def _print_seed(row: dict) -> None:
    for key in ("first_fit", "kept_fit"):
        f = row[key]
        print(
            f"seed {row['seed']} {key.replace('_', ' ')}: "
            f"{'learned' if f['learned'] else 'did not learn'} ({f['attempts']} fit(s)); test "
            f"macro-F1 {f['test_macro_f1']:.3f} (TF-IDF {f['tfidf_macro_f1']:.3f}), within-"
            f"criterion ROC-AUC {f['test_roc_auc_within']:.3f}",
            flush=True,
        )
