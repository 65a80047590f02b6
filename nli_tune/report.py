"""The search report: which setup is best, by how much, is the difference real, and what
did the final model do on held-out posts. One self-contained HTML page from the files the
search (and `train`) already wrote.

    python -m nli_tune.report outputs/<name> [--final outputs/final]

Writes outputs/<name>/report.html (plots embedded as PNG, no network) and the PNGs under
outputs/<name>/report/, and logs them to the search's parent MLflow run. Fold scores of
two setups are compared with Nadeau and Bengio's corrected resampled t-test (CV folds
share training posts, so a plain paired t-test is over-confident). The reference rows (the
majority class, TF-IDF + one logistic regression per criterion) are computed here on the
search's own folds. Ids, numbers and plots only: never post text.
"""

from __future__ import annotations

import argparse
import os
import sys

from nli_tune.core.errors import run_cli
from nli_tune.reporting.build import build_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.report",
        description="Write OUTPUT/<name>/report.html for a finished search: trials ranked by "
        "the search's metric, corrected t-tests of the best against the next four at equal "
        "epochs, importance over trials at one epoch, majority and "
        "TF-IDF on the same folds, plots, and the final model's test numbers when "
        "`train` ran on the exported config. Logs it to the search's MLflow parent run.",
    )
    p.add_argument("run_dir", help="the search's output folder, e.g. outputs/pooling")
    p.add_argument("--final", help="the folder `train` wrote (default: found by the search id)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    args = p.parse_args(argv)
    out = build_report(args.run_dir, args.final, not args.no_mlflow)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run_cli(main))
