import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
REAL_SAMPLE = REPO.parent / "shared" / "redsm5-sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not REAL_SAMPLE.is_dir():
        pytest.skip("../shared/redsm5-sample is not present")
    return REAL_SAMPLE
