"""The --device and --threads flags that `train` and `predict` share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nli_tune.core.errors import UserError

if TYPE_CHECKING:
    import torch


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: all cores)"
    )


def select_device(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the --device (cuda where there is one, else cpu)."""
    import torch  # here, so that the commands check their other arguments before it loads

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
