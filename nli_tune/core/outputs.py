"""Output folders that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

# Columns of the search's tables that hold ids. Tune's trial ids are 8 hex digits, and
# pandas would read "17063e69" as the float 1.7e73 and "00123456" as 123456.
ID_COLUMNS = ("trial_id", "mlflow_run_id")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target`, on error it is
    removed, so a failed run never leaves a half-written output folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{tmp.name[-8:]}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write a file whole or not at all: a temp file beside it replaces it (os.replace is
    atomic on one filesystem), so a reader or a crash never sees half of it."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV table a search wrote (cv_results.csv, epochs.csv), its id columns as text."""
    return pd.read_csv(path, dtype=dict.fromkeys(ID_COLUMNS, str))
