"""nli_tune: search and train DoRA fine-tuning setups of a bidirectional Gemma-3 encoder
for DSM-5 criterion NLI over ReDSM5 posts."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root holds the bundled data (criteria, sample) and search spaces; the
# package is installed editable from the clone, so these resolve without packaging data.
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "sample"
SPACES_DIR = REPO_ROOT / "search_spaces"
