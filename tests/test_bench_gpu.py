"""The GPU bench's arithmetic and bookkeeping, on the CPU at tiny shapes (never its timings)."""

import json
import math
import statistics

import pytest
import torch

from nli_tune.core.errors import run_cli
from nli_tune.measure import gpu as bench_gpu


def _layer_matrices(h, inter, heads, kv, head_dim):
    """q, o: h x heads*head_dim; k, v: h x kv*head_dim; gate, up, down: h x inter."""
    return 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * inter


def test_flop_terms_on_the_tiny_shape_match_a_hand_count():
    model = bench_gpu.build(True, "eager", False, "cpu")
    config = model.backbone.config
    seq = 32
    counts = bench_gpu.flop_counts(model, seq)
    # tiny_config: hidden 64, MLP 128, 4 heads of 16, 1 KV head, 2 layers, vocab 512.
    assert counts["n_base"] == 2 * _layer_matrices(64, 128, 4, 1, 16)
    assert counts["n_embedding"] == 512 * 64
    # DoRA r=16 on q/k/v/o: A (r x in), B (out x r) and a magnitude per output.
    per_layer = sum(16 * (i + o) + o for i, o in [(64, 64), (64, 16), (64, 16), (64, 64)])
    assert counts["n_adapters"] == 2 * per_layer
    assert counts["n_adapters"] == model.backbone.get_nb_trainable_parameters()[0]
    assert counts["n_head"] == 2 * 64 + (64 * 2 + 2) + (64 + 1)  # norm, head, MIL scorer
    # Bidirectional: the config's window 8 is halved to 5 (|i - j| < 5), a 9-key band.
    assert config.layer_types == ["sliding_attention", "full_attention"]
    assert config.sliding_window == 5 and bench_gpu.band(config) == 9
    assert counts["attention_flops_per_token"] == 3 * 4 * (4 * 16) * (9 + seq)
    assert bench_gpu.attention_flops_per_token(config, 6) == 3 * 4 * 64 * (6 + 6)
    assert counts["flops_per_token"] == (
        4 * counts["n_base"] + 6 * counts["n_train"] + counts["attention_flops_per_token"]
    )


def test_the_1b_shape_is_the_published_gemma3_1b():
    config = bench_gpu.gemma3_1b_text_config()
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (
        1152,
        6912,
        26,
    )
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 256)
    assert (config.query_pre_attn_scalar, config.vocab_size) == (256, 262_144)
    full = [i for i, t in enumerate(config.layer_types) if t == "full_attention"]
    assert full == [5, 11, 17, 23]  # every 6th layer full, the other 5 sliding
    assert config.rope_parameters["full_attention"]["rope_theta"] == 1_000_000
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000
    assert config.final_logit_softcapping is None and config.attn_logit_softcapping is None
    assert config.use_bidirectional_attention and not config.use_cache
    assert config.sliding_window == 257 and bench_gpu.band(config) == 513  # 512 halved, +-256

    model = bench_gpu.build(False, "sdpa", False, "meta")  # no memory, about a second
    backbone = model.backbone.get_base_model()
    # The count Keras Hub publishes for gemma3_1b (embedding, layers, norms), adapters aside.
    base = (p.numel() for name, p in backbone.named_parameters() if "lora_" not in name)
    assert sum(base) == 999_885_952
    counts = bench_gpu.flop_counts(model, 512)
    assert counts["n_base"] == 26 * _layer_matrices(1152, 6912, 4, 1, 256) == 697_761_792
    assert counts["n_embedding"] == 262_144 * 1152 == 301_989_888
    assert counts["n_adapters"] == model.backbone.get_nb_trainable_parameters()[0] == 3_051_776
    # 512 tokens fit every 513-key band: each layer sees the whole sequence.
    assert counts["attention_flops_per_token"] == 3 * 4 * 1024 * 26 * 512
    assert 2.9e9 < counts["flops_per_token"] < 3.0e9


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA A10", None),
        ("NVIDIA L40", None),
        ("Tesla T4", None),
    ],
)
def test_peak_table_is_read_by_card_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    found, source = bench_gpu.peak_flops(torch.device("cuda"), None)
    assert found == peak
    assert (peak is None) == ("not in the peak table" in source)
    assert bench_gpu.peak_flops(torch.device("cuda"), 500.0) == (500e12, "--peak-tflops")


ARGS = ["--tiny", "--allow-cpu", "--batch", "2", "--seq", "24"]


def test_cpu_run_records_every_variant_and_its_arithmetic(tmp_path, capsys):
    out = tmp_path / "gpu_bench.json"
    args = [*ARGS, "--steps", "2", "--warmup", "1", "--peak-tflops", "0.5"]
    assert bench_gpu.main([*args, "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["peak_flops"] == 0.5e12
    variants = {(v["attention"], v["gradient_checkpointing"]): v for v in r["variants"]}
    assert set(variants) == {(a, c) for a in ("eager", "sdpa") for c in (False, True)}
    flops = r["flops"]["flops_per_token"]
    assert r["flops"]["formula"].startswith("flops/token = 4*N_base + 6*N_train")
    for v in variants.values():
        assert v["status"] == "ok" and len(v["step_s"]) == 2 and len(v["losses"]) == 3
        assert v["step_s_median"] == statistics.median(v["step_s"])
        assert v["tokens_per_s"] == pytest.approx(2 * 24 / v["step_s_median"])
        assert v["mfu"] == pytest.approx(flops * v["tokens_per_s"] / 0.5e12)
        assert v["goal_met"] == (v["mfu"] >= 0.45)
        assert v["peak_gib"] is None  # no CUDA allocator on the CPU
        assert all(math.isfinite(x) for x in v["losses"])
    # The same seed trains the same model: checkpointing recomputes the same forward, and
    # the two attention backends agree to bf16 rounding.
    for attention in ("eager", "sdpa"):
        on, off = variants[attention, True]["losses"], variants[attention, False]["losses"]
        assert on == pytest.approx(off, abs=1e-6)
    eager, sdpa = variants["eager", False]["losses"], variants["sdpa", False]["losses"]
    assert eager == pytest.approx(sdpa, abs=1e-2)
    assert r["best_mfu"] == max(v["mfu"] for v in variants.values())
    printed = capsys.readouterr().out
    assert "sdpa, checkpointing on" in printed and "goal MFU >= 45%" in printed


def test_without_a_peak_mfu_is_none_and_an_oom_is_recorded(tmp_path, monkeypatch):
    real = bench_gpu.train_steps

    def eager_runs_out(model, device, args):
        if model.backbone.config._attn_implementation == "eager":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore")
        return real(model, device, args)

    monkeypatch.setattr(bench_gpu, "train_steps", eager_runs_out)
    out = tmp_path / "gpu_bench.json"
    assert bench_gpu.main([*ARGS, "--steps", "1", "--warmup", "0", "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["peak_flops"] is None and "--peak-tflops" in r["peak_flops_source"]
    assert r["best_mfu"] is None and r["goal_met"] is None
    for v in r["variants"]:
        if v["attention"] == "eager":
            assert (
                v["status"] == "oom" and v["error"] == "CUDA out of memory. Tried to allocate 2 GiB"
            )
        else:
            assert v["status"] == "ok" and v["mfu"] is None and v["goal_met"] is None


def test_no_cuda_without_allow_cpu_is_one_line_exit_2_and_nothing_written(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "sub" / "gpu_bench.json"
    assert run_cli(bench_gpu.main, ["--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and "--allow-cpu" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
