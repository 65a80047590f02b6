"""A fold ensemble as one model folder: the search's K fold models of its exported trial.

The folder is a model folder like `train` writes (its adapter, head and config are fold
0's, so anything that loads a model loads it) plus ENSEMBLE_FILE, which lists every
member's trainable tensors (adapters, pooler, head: a few MB each; the backbone is shared)
and calibration. Scoring one (evaluation/scoring.py `score_ensemble`): each member's
calibrated probability of a (post, criterion), averaged; the evidence is the unit whose
mean calibrated score is highest; the decision threshold is the mean of the members'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nli_tune.model.calibration import ENSEMBLE, Calibration
from nli_tune.model.classifier import load_trainable, save_model
from nli_tune.model.files import ENSEMBLE_FILE

Member = tuple[dict[str, torch.Tensor], Calibration]  # (trainable state, calibration)


def ensemble_calibration(members: list[Member]) -> Calibration:
    """The decision rule on the members' mean probability: the identity on its logit
    (`score_ensemble` returns logit(mean)), at the members' mean threshold (per criterion
    where theirs are)."""
    threshold = float(np.mean([c.threshold for _, c in members]))
    posts = sum(c.posts for _, c in members)
    criteria = None
    if all(c.criteria for _, c in members):
        cuts = np.mean([[k["threshold"] for k in c.criteria] for _, c in members], axis=0)
        criteria = [{"a": 1.0, "b": 0.0, "threshold": float(t)} for t in cuts]
    return Calibration(ENSEMBLE, 1.0, 0.0, threshold, posts, criteria)


def save_ensemble(model, cfg, out_dir: str | Path, members: list[Member], about: dict) -> None:
    """Write the folder: fold 0 as the folder's own model, every member's state file and
    calibration in ENSEMBLE_FILE (with `about`: which trial, folds and seeds they are)."""
    out = Path(out_dir)
    load_trainable(model, members[0][0])
    save_model(model, cfg, out, ensemble_calibration(members))
    listed = []
    for k, (state, calibration) in enumerate(members):
        name = f"member{k}.safetensors"
        save_file({n: t.contiguous() for n, t in state.items()}, str(out / name))
        listed.append({"state": name, "calibration": calibration.to_dict()})
    (out / ENSEMBLE_FILE).write_text(json.dumps(about | {"members": listed}, indent=1))


def load_members(model_dir: str | Path) -> list[Member] | None:
    """The members of an ensemble folder, or None for a single model's folder."""
    root = Path(model_dir)
    if not (root / ENSEMBLE_FILE).is_file():
        return None
    listed = json.loads((root / ENSEMBLE_FILE).read_text())["members"]
    return [(load_file(str(root / m["state"])), Calibration(**m["calibration"])) for m in listed]
