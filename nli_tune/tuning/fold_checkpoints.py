"""Where a trial's fold checkpoints are: Ray Train keeps each trial's last one, under
`{train storage}/trial_{id}/epoch_{NNN}/fold{k}` (the names run_trial and fold_worker
give it). The search's fold ensemble reads them after the search ends."""

from __future__ import annotations

from pathlib import Path


def fold_checkpoints(
    train_storage: str, trial_id: str, epoch: int, folds: int, scratch: Path
) -> list[Path]:
    """The trial's fold checkpoint folders at `epoch`, local (a storage URI such as
    s3://... is copied under `scratch` first)."""
    base = f"{train_storage.rstrip('/')}/trial_{trial_id}/epoch_{epoch:03d}"
    if "://" in base:
        from pyarrow import fs

        fs.copy_files(base, str(scratch))
        root = scratch
    else:
        root = Path(base)
    dirs = [root / f"fold{k}" for k in range(folds)]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"fold checkpoint not found: {missing[0]}")
    return dirs
