"""What a saved model folder holds (train writes it, predict reads it), and the check that a
folder is one. No torch here: predict checks its --model before the heavy imports."""

from __future__ import annotations

from pathlib import Path

from nli_tune.core.errors import UserError

HEAD_FILE = "head.safetensors"  # pooler + head weights
ADAPTER_DIR = "adapter"  # the peft DoRA adapter
CONFIG_FILE = "config.yaml"  # the TrainConfig the model was trained with
CALIBRATION_FILE = "calibration.json"  # Platt scaling and the decision threshold
ENSEMBLE_FILE = "ensemble.json"  # a fold ensemble's members (model/ensemble.py), if one


def check_model_dir(path: str | Path) -> Path:
    """The model folder, or a one-line error naming what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: model folder not found (pass the model/ folder train wrote)")
    for name in (CONFIG_FILE, HEAD_FILE, ADAPTER_DIR, CALIBRATION_FILE):
        if not (root / name).exists():
            raise UserError(
                f"{root}: not a trained model folder (no {name}); pass the model/ folder that "
                f"`python -m nli_tune.train` wrote, e.g. outputs/final/model"
            )
    return root
