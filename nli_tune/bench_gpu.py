"""python -m nli_tune.bench_gpu: the GPU training bench (nli_tune/measure/gpu.py), kept as a
command because scripts/gpu-bench and docs/benchmarks.md run it by this name."""

from nli_tune.core.errors import run_cli
from nli_tune.measure.gpu import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
