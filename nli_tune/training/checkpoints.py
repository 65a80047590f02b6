"""A fold's checkpoint: safetensors for tensors and JSON for the rest (no pickle), so a
retried fold worker or a resumed search continues exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from nli_tune.model.calibration import Calibration

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def save_checkpoint(trainer, out_dir: str | Path) -> None:
    """The fold's whole state: trainable and best weights, optimizer, scheduler, rng,
    calibrations and FoldState, as safetensors plus JSON (no pickle)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"param/{k}": v for k, v in trainer.trainable_state().items()}
    if trainer.best_params is not None:
        tensors |= {f"best/{k}": v for k, v in trainer.best_params.items()}
    opt = trainer.optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            tensors[f"opt/{pid}/{key}"] = value.detach().contiguous().cpu()
    save_file(tensors, str(out / STATE_TENSORS))
    meta = {
        "fold_state": trainer.state.__dict__,
        "scheduler": trainer.scheduler.state_dict(),
        "param_groups": opt["param_groups"],
        "rng": trainer.rng.bit_generator.state,
        "calibration": trainer.calibration.to_dict(),
        "best_calibration": trainer.best_calibration.to_dict(),
        "calib_roc_auc_within": trainer.calib_roc_auc_within,
    }
    (out / STATE_JSON).write_text(json.dumps(meta, default=_jsonable))


def load_checkpoint(trainer, src_dir: str | Path) -> None:
    """Restore what save_checkpoint wrote into `trainer` (built with the same config)."""
    src = Path(src_dir)
    tensors = load_file(str(src / STATE_TENSORS))
    meta = json.loads((src / STATE_JSON).read_text())
    trainer.load_trainable({k[6:]: v for k, v in tensors.items() if k.startswith("param/")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    trainer.best_params = best or None
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, pid, name = key.split("/", 2)
            opt_state.setdefault(int(pid), {})[name] = value.to(trainer.device)
    trainer.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    trainer.scheduler.load_state_dict(meta["scheduler"])
    trainer.rng.bit_generator.state = meta["rng"]
    trainer.state = type(trainer.state)(**meta["fold_state"])
    trainer.calibration = Calibration(**meta["calibration"])
    trainer.best_calibration = Calibration(**meta["best_calibration"])
    trainer.calib_roc_auc_within = meta.get("calib_roc_auc_within")


def _jsonable(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_fit(src_dir: str | Path) -> tuple[dict, Calibration]:
    """A checkpoint's trainable tensors (by parameter name) and calibration, as of its
    epoch: what a fold ensemble keeps of each fold (model/ensemble.py)."""
    src = Path(src_dir)
    tensors = load_file(str(src / STATE_TENSORS))
    meta = json.loads((src / STATE_JSON).read_text())
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("param/")}
    return state, Calibration(**meta["calibration"])
