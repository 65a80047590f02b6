"""Check ReDSM5 data or write a synthetic set.

    python -m nli_tune.data check --data-dir DIR      validate a ReDSM5 directory, print stats
    python -m nli_tune.data synth --out DIR ...       write a synthetic ReDSM5-format set

Only ids, labels and counts are printed: never post text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nli_tune.core.errors import UserError, run_cli
from nli_tune.redsm5.load import load_redsm5, stats
from nli_tune.units.evidence import location_report


def _print_stats(s: dict, source: Path) -> None:
    print(f"ReDSM5 data at {source}: OK")
    print(f"  posts {s['posts']}   annotations {s['annotations']}   pairs {s['pairs']}")
    print(
        f"  matched pairs {s['matched_pairs']} ({100 * s['matched_rate']:.1f}%)   "
        f"posts with no match {s['posts_with_no_match']}   "
        f"SPECIAL_CASE posts {s['special_case_posts']}   "
        f"status-0 annotations {s['negative_annotations']}"
    )
    print("  matched per criterion:")
    for key, n in s["matched_per_criterion"].items():
        print(f"    {key:<18} {n}")
    w = s["words_per_post"]
    print("  words per post: " + "  ".join(f"{k} {v}" for k, v in w.items()))
    print(f"  fingerprint {s['fingerprint']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _check(args) if args.cmd == "check" else _synth(args)


def _parser() -> argparse.ArgumentParser:
    from nli_tune.redsm5.synth_templates import TEMPLATE_SETS  # loads the template JSON: only here

    parser = argparse.ArgumentParser(
        prog="python -m nli_tune.data", description="Validate ReDSM5 data or make a synthetic set."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate a ReDSM5 directory and print its stats")
    check.add_argument(
        "--data-dir",
        default=None,
        help="folder with redsm5_posts*.csv and redsm5_annotations*.csv "
        "(default: the bundled synthetic sample in data/sample)",
    )
    check.add_argument("--json", action="store_true", help="print the stats as JSON")
    synth = sub.add_parser("synth", help="write a synthetic ReDSM5-format data set")
    synth.add_argument("--out", required=True, help="output folder (created)")
    synth.add_argument("--posts", type=int, default=1484, help="number of posts (default 1484)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--mean-words",
        type=int,
        default=295,
        help="mean words per post (default 295, the real ReDSM5 scale)",
    )
    synth.add_argument(
        "--templates",
        choices=TEMPLATE_SETS,
        default="seen",
        help="sentence templates for labelled sentences (default seen: those the bundled "
        "sample uses). heldout: labelled sentences only from templates the bundled sample "
        "never uses, to test generalisation to unseen wording; all: both",
    )
    synth.add_argument("--overwrite", action="store_true", help="replace existing CSVs")
    return parser


def _check(args) -> int:
    """Validate the folder, locate the annotations in their posts, print the counts."""
    data = load_redsm5(args.data_dir)
    s = stats(data)
    report = location_report(data)
    s["annotations_located"] = {
        "criterion_annotations": report.annotations,
        "exact": report.exact,
        "normalised": report.normalised,
        "not_located": report.not_located,
    }
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print_stats(s, data.source)
        print(f"  {report.line()}")
    return 0


def _synth(args) -> int:
    """Write a synthetic ReDSM5-format set."""
    from nli_tune.redsm5 import synth as synth_mod

    if args.posts < 1:
        raise UserError(f"--posts {args.posts}: must be >= 1")
    if args.mean_words < 10:
        raise UserError(f"--mean-words {args.mean_words}: must be >= 10")
    try:
        paths = synth_mod.write(
            args.out,
            args.posts,
            args.seed,
            args.mean_words,
            overwrite=args.overwrite,
            templates=args.templates,
        )
    except FileExistsError as err:
        raise UserError(f"{err} (pass --overwrite to replace it)") from None
    print(
        f"wrote {args.posts} synthetic posts ({args.templates} templates): {paths[0]}, {paths[1]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
