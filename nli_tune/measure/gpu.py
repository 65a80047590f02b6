"""Training speed of the product's model at the 1B scale on a GPU, as model-FLOPs utilisation.

    python -m nli_tune.bench_gpu [--output gpu_bench.json] [--batch 8] [--seq 512]
                                 [--steps 20] [--warmup 5] [--peak-tflops X] [--weights fp32]
                                 [--tiny] [--allow-cpu]

The CPU bench (bench.py) asks whether a 2-core box trains fast enough; on a GPU the question
is how much of the card the trainer uses. So this times a Gemma-3 1B-shape encoder, random
init (the shape sets the speed, the weights do not, and nothing is downloaded), built as the
product builds its model (model.wrap_backbone: bidirectional, DoRA r=16 on the default
targets without adapter dropout, the pooler and head) and trained as the fold trainer trains
it (bf16 autocast over fp32 weights, class-weighted cross-entropy on the 2-way head, gradient
clipping at 1.0, AdamW), on random [batch, seq] token batches: with and without gradient
checkpointing, under each attention backend that this machine has.

MFU = model FLOPs per token x tokens/s / the card's peak dense bf16 FLOP/s, where a training
step's model FLOPs per token are

    4 N_base + 6 N_train + 3 x 4 d_attn sum over layers of s_eff

- N_base: the frozen backbone's matrix weights (q/k/v/o, gate/up/down), without the
  embedding table: a lookup does no matmul, Gemma ties it and the encoder has no LM head.
  Frozen weights cost 2N forward and 2N for the input gradients, and get no weight grads.
- N_train: every trainable parameter (DoRA's A, B and magnitudes; pooler, norm and head):
  2N forward, 2N input gradients, 2N weight gradients. The head runs once per pair and the
  magnitudes scale elementwise, so this overstates by about 0.5 MFLOP of ~3 GFLOP a token.
- attention: QK^T and AV cost 2 s_eff d_attn each per token and layer forward (d_attn =
  heads x head_dim), the backward twice that. s_eff is the keys a query may see: the whole
  sequence in full layers, min(seq, band) in sliding ones, the band read from the built
  config (bidirectional: |i - j| < sliding_window, which the config has already halved).
Not counted: the forward that gradient checkpointing recomputes (MFU counts the model's
FLOPs, not the hardware's, so checkpointing shows as lower MFU), DoRA's weight norm (once a
step, not per token), norms, activations, softmax, rotary, and masked keys a kernel computes.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import Gemma3TextConfig, Gemma3TextModel

from nli_tune.core.config import TrainConfig
from nli_tune.core.errors import UserError
from nli_tune.core.outputs import atomic_write_text
from nli_tune.model.backbones import encoder_config, tiny_config
from nli_tune.model.classifier import PairClassifier, wrap_backbone
from nli_tune.training.fold_trainer import MAX_GRAD_NORM, class_weighted_loss, make_optimizer

# The published google/gemma-3-1b-pt text architecture (its config.json). Rope thetas (1e6
# full, 1e4 sliding), activation, norms, no softcapping and the 5 sliding : 1 full layer
# pattern are Gemma3TextConfig's defaults, which match it (tests/test_bench_gpu.py checks).
GEMMA3_1B = dict(
    vocab_size=262_144,
    hidden_size=1152,
    intermediate_size=6912,
    num_hidden_layers=26,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    max_position_embeddings=32_768,
    sliding_window=512,
)
TINY_VOCAB = 512
WEIGHTS = {"fp32": torch.float32, "bf16": torch.bfloat16}
GOAL_MFU = 0.45  # issue 11: on an H100-class card

# Dense (no 2:4 sparsity) bf16 tensor-core peaks. NVIDIA's datasheets print the sparse figure,
# twice these, with an asterisk. First match wins, so a name comes before those it contains;
# an H100 that is neither SXM, PCIe nor NVL gets no figure rather than a guess.
PEAK_BF16_DENSE = (
    (r"\bH100\b.*\bNVL\b", 835e12),
    (r"\bH100\b.*\bPCIe\b", 756e12),
    (r"\bH100\b.*\b(SXM|HBM3)", 989e12),
    (r"\bH200 NVL\b", 835e12),
    (r"\b(GH|H)200\b", 989e12),
    (r"\bA100\b", 312e12),
    (r"\bL40S\b", 362e12),
    (r"\bA10G\b", 70e12),  # AWS's A10 variant, with less tensor throughput than the A10's 125
    (r"\bL4\b", 121e12),
)
FORMULA = (
    "flops/token = 4*N_base + 6*N_train + 3*4*d_attn*sum_layers(s_eff); N_base = frozen "
    "backbone matrix weights without the embedding; s_eff = seq (full layers) or "
    "min(seq, band) (sliding layers); gradient checkpointing's recompute not counted. "
    "MFU = flops/token * tokens/s / peak dense bf16 FLOP/s"
)


def gemma3_1b_text_config(tiny: bool = False) -> Gemma3TextConfig:
    """A fresh 1B text config as the product's encoder, bidirectional and without a KV cache,
    both set at construction (backbones.encoder_config), where they take effect; tiny: the
    tiny-random architecture's instead (2 layers: one sliding, one full), for tests."""
    base = tiny_config(TINY_VOCAB) if tiny else Gemma3TextConfig(**GEMMA3_1B)
    return encoder_config(base, "tiny shape" if tiny else "gemma-3-1b shape", True, None)


def build(
    tiny: bool,
    attention: str,
    checkpointing: bool,
    device: torch.device | str,
    weights: torch.dtype = torch.float32,
) -> PairClassifier:
    """The product's classifier on a random-init backbone, made directly on `device` (on
    "meta" it costs no memory: for counting)."""
    # An nli pair step (the 2-way head), as the 1B-shape figures have been measured on.
    cfg = TrainConfig(rank=16, grad_checkpointing=checkpointing, pairing="nli")
    config = gemma3_1b_text_config(tiny)
    config._attn_implementation = attention
    torch.manual_seed(0)
    with torch.device(device):
        model = wrap_backbone(Gemma3TextModel(config), cfg)
    # The head stays fp32 whatever the backbone's dtype: PairClassifier runs it outside autocast.
    model.backbone.to(weights)
    return model.to(device)


def band(config: Gemma3TextConfig) -> int:
    """Keys a query may see in a sliding layer. Bidirectional: |i - j| < sliding_window (the
    config's value, halved at construction), so 2 * sliding_window - 1; causal: the window."""
    if config.use_bidirectional_attention:
        return 2 * config.sliding_window - 1
    return config.sliding_window


def attention_flops_per_token(config: Gemma3TextConfig, seq: int) -> int:
    """QK^T + AV, forward and backward, per token, summed over layers."""
    d_attn = config.num_attention_heads * config.head_dim
    keys = [seq if t == "full_attention" else min(seq, band(config)) for t in config.layer_types]
    return 3 * 4 * d_attn * sum(keys)


def flop_counts(model: PairClassifier, seq: int) -> dict[str, int]:
    """The formula's terms counted on a built model (any device, "meta" included)."""
    backbone = next(m for m in model.modules() if isinstance(m, Gemma3TextModel))
    embedding = backbone.embed_tokens.weight
    # Frozen matrices other than the embedding are the base layers' weights (Gemma's norms
    # are vectors, and DoRA's A and B train).
    n_base = sum(
        p.numel()
        for p in backbone.parameters()
        if p.ndim == 2 and not p.requires_grad and p is not embedding
    )
    n_adapters = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attention = attention_flops_per_token(backbone.config, seq)
    return {
        "n_base": n_base,
        "n_embedding": embedding.numel(),
        "n_adapters": n_adapters,
        "n_head": n_train - n_adapters,
        "n_train": n_train,
        "attention_flops_per_token": attention,
        "flops_per_token": 4 * n_base + 6 * n_train + attention,
    }


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s, where it came from) or (None, why there is none)."""
    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak FLOP/s for a CPU: pass --peak-tflops for an MFU"
    name = torch.cuda.get_device_name(device)
    for pattern, flops in PEAK_BF16_DENSE:
        if re.search(pattern, name, re.IGNORECASE):
            return flops, f"table: {pattern}"
    return None, f"{name!r} is not in the peak table: pass --peak-tflops for an MFU"


def attention_backends(device: torch.device) -> list[str]:
    from transformers.utils import is_flash_attn_2_available

    flash = device.type == "cuda" and is_flash_attn_2_available()
    return ["eager", "sdpa"] + (["flash_attention_2"] if flash else [])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model: PairClassifier, device: torch.device, args) -> dict:
    """Warm-up then timed training steps, each as the fold trainer takes one; step seconds
    (synchronised on CUDA) and losses."""
    cfg = TrainConfig(pairing="nli", neg_ratio=3.0)  # the steps build() sizes the model for
    vocab = model.backbone.config.vocab_size
    n = args.warmup + args.steps
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, args.batch, args.seq), generator=gen).to(device)
    # One positive per neg_ratio negatives, as the trainer draws them, and its class weights.
    labels = (torch.rand((n, args.batch), generator=gen) < 1 / (1 + cfg.neg_ratio)).long()
    labels = labels.to(device)
    loss_fn = class_weighted_loss(cfg.neg_ratio, 1.0, cfg, device)
    mask = torch.ones_like(ids[0])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    model.train()  # checkpointing acts in training mode only
    seconds, losses = [], []
    for i in range(n):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(ids[i], mask)
        loss = loss_fn(logits.float(), labels[i])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - t0)
        losses.append(loss.detach())
    return {"step_s": seconds, "losses": [float(x) for x in losses]}


def run_variant(
    attention: str, checkpointing: bool, device: torch.device, args, flops: int, peak
) -> dict:
    """One variant's figures; an out-of-memory or a backend that will not build is recorded
    as the variant's status, not raised."""
    out: dict = {"attention": attention, "gradient_checkpointing": checkpointing}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        try:
            model = build(args.tiny, attention, checkpointing, device, WEIGHTS[args.weights])
        except (ImportError, ValueError) as err:  # a backend this model or card refuses
            return out | {"status": "unavailable", "error": str(err).splitlines()[0]}
        out |= train_steps(model, device, args)
    except torch.cuda.OutOfMemoryError as err:
        return out | {"status": "oom", "error": str(err).splitlines()[0]}
    step = statistics.median(out["step_s"])
    tokens_per_s = args.batch * args.seq / step
    mfu = None if peak is None else flops * tokens_per_s / peak
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return out | {
        "status": "ok",
        "step_s_median": step,
        "tokens_per_s": tokens_per_s,
        "peak_gib": peak_gib,
        "mfu": mfu,
        "goal_met": None if mfu is None else mfu >= GOAL_MFU,
    }


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def environment(device: torch.device) -> dict:
    cpu = f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    versions = {name: version(name) for name in ("torch", "transformers", "peft")}
    return {"card": card, **versions, "cuda": torch.version.cuda}


def shape(config: Gemma3TextConfig) -> dict:
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    keys += ("num_key_value_heads", "head_dim", "vocab_size", "sliding_window")
    return {k: getattr(config, k) for k in keys} | {
        "sliding_band_keys": band(config),
        "sliding_layers": config.layer_types.count("sliding_attention"),
        "full_layers": config.layer_types.count("full_attention"),
        "bidirectional": bool(config.use_bidirectional_attention),
    }


def table(variants: list[dict]) -> list[str]:
    lines = [
        f"  {'variant':<34} {'step ms':>8} {'tokens/s':>10} {'peak GiB':>8} {'MFU':>6}   "
        f"goal MFU >= {GOAL_MFU:.0%}"
    ]
    for v in variants:
        name = f"{v['attention']}, checkpointing {'on' if v['gradient_checkpointing'] else 'off'}"
        if v["status"] != "ok":
            lines.append(f"  {name:<34} {v['status'].upper()}: {v['error'][:60]}")
            continue
        gib = "-" if v["peak_gib"] is None else f"{v['peak_gib']:.2f}"
        mfu = "-" if v["mfu"] is None else f"{v['mfu']:.1%}"
        verdict = {None: "no peak known", True: "met", False: "MISSED"}[v["goal_met"]]
        lines.append(
            f"  {name:<34} {v['step_s_median'] * 1e3:8.1f} {v['tokens_per_s']:10.0f} "
            f"{gib:>8} {mfu:>6}   {verdict}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak, peak_source = peak_flops(device, args.peak_tflops)
    counts = flop_counts(build(args.tiny, "eager", False, "meta"), args.seq)
    env = environment(device)
    variants, best = _run_variants(args, device, env, counts, peak, peak_source)
    if args.output:
        results = {
            "environment": env,
            "device": device.type,
            "peak_flops": peak,
            "peak_flops_source": peak_source,
            "shape": shape(gemma3_1b_text_config(args.tiny)),
            "dora": {"rank": 16, "targets": TrainConfig().dora_targets, "dropout": 0.0},
            "precision": f"bf16 autocast, backbone weights {args.weights}",
            **{k: getattr(args, k) for k in ("batch", "seq", "steps", "warmup")},
            "flops": {"formula": FORMULA, **counts},
            "peak_memory": (
                "torch.cuda.max_memory_allocated" if device.type == "cuda" else "none on CPU"
            ),
            "goal_mfu": GOAL_MFU,
            "best_mfu": best,
            "goal_met": None if best is None else best >= GOAL_MFU,
            "variants": variants,
        }
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(results, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nli_tune.bench_gpu",
        description="Time the product's training step on a Gemma-3 1B-shape encoder (random "
        "init, DoRA r=16, bf16 autocast) on a CUDA GPU, with and without gradient "
        "checkpointing, under each attention backend; report tokens/s, peak memory and MFU "
        "(the formula is in the module docstring and the JSON).",
        epilog="MFU = (4 N_base + 6 N_train + attention) FLOPs/token x tokens/s / peak dense bf16 "
        "FLOP/s. Known peaks: H100 SXM/PCIe/NVL, H200 (NVL), GH200, A100, L40S, L4, A10G; "
        "other cards need --peak-tflops. Without CUDA it stops (exit 2) unless --allow-cpu.",
    )
    p.add_argument("--output", help="write every figure to this JSON file (whole or not at all)")
    p.add_argument("--batch", type=int, default=8, help="pairs per step (default 8)")
    p.add_argument("--seq", type=int, default=512, help="tokens per pair (default 512)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="the card's peak dense bf16 TFLOP/s for MFU (default: from a table of known cards)",
    )
    p.add_argument(
        "--weights",
        choices=("fp32", "bf16"),
        default="fp32",
        help="backbone weights: fp32 as the trainer keeps them, autocast casting each frozen "
        "matrix every step (default); bf16 stores them so, for what that cast costs",
    )
    p.add_argument("--tiny", action="store_true", help="the tiny-random shape (tests, checks)")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run without CUDA to check the arithmetic; its timings say nothing about a GPU",
    )
    return p


def _check(args) -> None:
    """One-line errors for arguments that cannot run, before any model is built."""
    for name in ("batch", "seq", "steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup}: must be >= 0")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise UserError(f"--peak-tflops {args.peak_tflops}: must be > 0")
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise UserError(
            "no CUDA device: this bench times GPU training; run it on a GPU machine, or add "
            "--allow-cpu (with --tiny) to check its arithmetic on the CPU"
        )


def _run_variants(args, device, env: dict, counts: dict, peak, peak_source: str):
    """Every (checkpointing, attention backend) variant, a table row as each ends; returns
    the variants and the best MFU (None without a known peak)."""
    print(
        f"{env['card']}; torch {env['torch']} (CUDA {env['cuda']}), transformers "
        f"{env['transformers']}, peft {env['peft']}; peak "
        f"{'unknown' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'} ({peak_source})"
    )
    print(
        f"{'tiny' if args.tiny else 'Gemma-3 1B'} shape, batch {args.batch} x seq {args.seq}, "
        f"{counts['flops_per_token'] / 1e9:.3f} GFLOP/token (N_base {counts['n_base']:,}, "
        f"N_train {counts['n_train']:,}), {args.warmup} + {args.steps} steps per variant"
    )
    print(table([])[0])
    variants = []
    for checkpointing in (False, True):
        for attention in attention_backends(device):
            variants.append(
                run_variant(attention, checkpointing, device, args, counts["flops_per_token"], peak)
            )
            _free(device)
            print(table(variants[-1:])[-1], flush=True)  # each row as its variant ends
    mfus = [v["mfu"] for v in variants if v.get("mfu") is not None]
    best = max(mfus, default=None)
    print(f"best MFU {'-' if best is None else f'{best:.1%}'} against the goal {GOAL_MFU:.0%}")
    return variants, best
