"""Did a fit learn? One rule, read by the search (every fold fit at its last epoch), its
confirmation stage and `train` (which retries a fit that did not).

A fit that fails does not diverge, it stalls: at the top of an lr range its train loss
stays near the first epoch's (0.685 -> 0.56 over 8 epochs, where fits that learn reach
0.1), and its scores rank posts little better than chance. The rule reads only what the
fit may see: its train loss per epoch, and its within-criterion ROC-AUC on its own
calibration posts (training posts held out from fitting; never validation or test posts).
Its two thresholds are config keys (`learned_loss_ratio`, `learned_calib_auc`), their
defaults read off measured fits (docs/training.md shows how they separate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FitCheck:
    learned: bool
    loss_ratio: float  # last epoch's train loss / first epoch's (NaN: one epoch)
    calib_roc_auc_within: float  # NaN: no calibration posts, or a single class there
    max_loss_ratio: float  # the thresholds it was judged by
    min_calib_auc: float

    def line(self) -> str:
        """One line: the verdict and the two numbers it rests on."""
        verdict = "learned" if self.learned else "did not learn"
        return (
            f"{verdict} (train loss last/first {self.loss_ratio:.2f}, at most "
            f"{self.max_loss_ratio:g}; within-criterion ROC-AUC on its calibration posts "
            f"{self.calib_roc_auc_within:.3f}, at least {self.min_calib_auc:g})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def check_fit(losses: list[float], calib_roc_auc_within: float | None, cfg) -> FitCheck:
    """The rule on a fit's per-epoch train losses and its calibration-post ROC-AUC, at
    `cfg`'s thresholds: each signal that is defined must pass (a one-epoch fit has no
    loss trend to judge; a fit without calibration posts no ranking to judge)."""
    ratio = losses[-1] / losses[0] if len(losses) >= 2 and losses[0] > 0 else math.nan
    auc = math.nan if calib_roc_auc_within is None else float(calib_roc_auc_within)
    max_ratio, min_auc = cfg.learned_loss_ratio, cfg.learned_calib_auc
    learned = not ratio > max_ratio and not auc < min_auc  # NaN passes
    return FitCheck(learned, ratio, auc, max_ratio, min_auc)
