"""Score new posts with a trained model: per post and criterion, P(matched), the decision and
the evidence unit's character span.

    python -m nli_tune.predict --model outputs/final/model --input posts.csv --output scores.csv

`posts.csv` is the ReDSM5 posts format (`post_id,text`). The input is validated whole before
anything is scored or written (one-line error, exit 2). Posts are then scored in batches of
`--batch-posts`, with a progress line per batch, into a temporary file that replaces
`--output` only when every post is scored. The output has ids, scores, decisions and
character offsets only: never post or sentence text.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from nli_tune.core.errors import UserError, run_cli
from nli_tune.model.calibration import Calibration
from nli_tune.model.device import add_device_args, select_device
from nli_tune.model.files import CALIBRATION_FILE, check_model_dir
from nli_tune.redsm5.load import ANNOTATION_COLUMNS, ReDSM5, n_criteria, read_posts

OUTPUT_COLUMNS = [
    "post_id",
    "criterion",
    "score",  # calibrated P(matched)
    "decision",  # 1 where score >= the model's threshold
    "evidence_unit",  # the best-scoring unit's number among the post's units (0-based)
    "evidence_start",  # its character span in the post's text [start, end)
    "evidence_end",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.predict",
        description="Score posts (post_id,text CSV) against the 9 DSM-5 criteria with a model "
        "that `python -m nli_tune.train` saved. Writes one row per (post, criterion): the "
        "calibrated probability that the post shows the criterion, the decision at the "
        "model's threshold, and the character span of the sentence (or window) that scored "
        "highest. No text is written.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="the model folder train wrote (e.g. outputs/final/model), or a search's fold "
        "ensemble (OUTPUT/<name>/ensemble/model: the mean of its fold models)",
    )
    p.add_argument("--input", required=True, help="posts CSV with columns post_id,text")
    p.add_argument(
        "--output",
        default="scores.csv",
        help="CSV to write (default scores.csv); an existing one is refused unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument(
        "--batch-posts",
        type=int,
        default=128,
        help="posts scored per batch; one progress line each (default 128)",
    )
    add_device_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def predict(
    model, tokenizer, cfg, calibration: Calibration, posts: pd.DataFrame, device, amp, members=None
) -> pd.DataFrame:
    """OUTPUT_COLUMNS for every post of `posts` x 9 criteria, posts in input order; with
    `members` (a fold ensemble's), their mean (`calibration` is then the ensemble's)."""
    from nli_tune.evaluation.scoring import evidence_table, score_ensemble, score_posts
    from nli_tune.model.prefix import cache_prefix
    from nli_tune.pairs.encoding import encode_units

    data = ReDSM5(
        posts=posts.reset_index(drop=True),
        annotations=pd.DataFrame(columns=list(ANNOTATION_COLUMNS)),
        source=Path("."),
        fingerprint="",
    )
    units = encode_units(tokenizer, data, cfg)
    how = (cfg.aggregate, cfg.topk, cfg.eval_batch_size, device, amp)
    if members:  # the shared frozen bottom runs once for all members
        units = cache_prefix(model, units, cfg.eval_batch_size, device, amp)
        scored = score_ensemble(model, members, units, *how)
    else:
        scored = score_posts(model, units, *how)
    probs = calibration.prob(scored.logits)
    table = evidence_table(units, scored, probs, calibration.decide(scored.logits).ravel())
    return table[OUTPUT_COLUMNS]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_posts < 1:
        raise UserError(f"--batch-posts {args.batch_posts}: must be >= 1")
    model_dir = check_model_dir(args.model)
    posts = read_posts(args.input)  # validated whole before any work
    output = Path(args.output)
    if output.is_dir():
        raise UserError(f"--output {output}: is a folder; give a CSV file name")
    if output.exists() and not args.overwrite:
        raise UserError(f"--output {output}: exists; pass --overwrite to replace it")
    device = select_device(args)  # torch loads here: the input is checked
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))

    # Only now torch, transformers and peft (seconds): bad input has failed fast above.
    from nli_tune.model.classifier import load_model
    from nli_tune.model.ensemble import ensemble_calibration, load_members
    from nli_tune.model.precision import autocast_dtype

    started = time.perf_counter()
    model, tokenizer, cfg = load_model(model_dir)
    model.to(device)
    calibration = Calibration(**json.loads((model_dir / CALIBRATION_FILE).read_text()))
    members = load_members(model_dir)  # a fold ensemble's members, or None
    if members:
        calibration = ensemble_calibration(members)
    amp = autocast_dtype(cfg.precision, device)
    kind = f"a fold ensemble of {len(members)} models" if members else "one model"
    say(
        f"model {model_dir} ({kind}: {cfg.model}, "
        f"{model.backbone.config.num_hidden_layers} layers, unit {cfg.unit}, aggregate "
        f"{cfg.aggregate}) on {device}, loaded in {time.perf_counter() - started:.1f}s; "
        f"decision: {calibration.describe()}"
    )

    # A kill (SIGTERM) unwinds like Ctrl-C, so the temporary file below is removed too.
    signal.signal(signal.SIGTERM, _exit_on_term)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        t0, n, matched = time.perf_counter(), len(posts), 0
        for i, start in enumerate(range(0, n, args.batch_posts)):
            batch = posts.iloc[start : start + args.batch_posts]
            rows = predict(model, tokenizer, cfg, calibration, batch, device, amp, members)
            rows.to_csv(tmp, mode="a", header=i == 0, index=False)
            matched += int(rows["decision"].sum())
            done = start + len(batch)
            rate = done / (time.perf_counter() - t0)
            say(
                f"  scored {done}/{n} posts ({done * n_criteria()} rows, {matched} matched)  "
                f"{rate:.1f} posts/s  eta {(n - done) / rate:.0f}s"
            )
            _exit_if_terminated()
        _exit_if_terminated()
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rows = n * n_criteria()
    say(f"wrote {output}: {rows} rows for {n} posts in {time.perf_counter() - started:.0f}s")
    return 0


_TERMINATED: list[int] = []  # the SIGTERM received, if any


def _exit_on_term(signum, frame):
    _TERMINATED.append(signum)
    raise SystemExit(128 + signum)


def _exit_if_terminated() -> None:
    """Python runs a signal handler between any two bytecodes, also inside a finalizer,
    where the SystemExit it raises is dropped: a kill is then honoured at the next batch,
    before the output file is written."""
    if _TERMINATED:
        raise SystemExit(128 + _TERMINATED[0])


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run_cli(main))
