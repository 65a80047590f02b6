"""The pair classifier: bidirectional Gemma-3 backbone + DoRA adapters + pooler + linear head.

A pair is (unit, criterion); the pooler reduces the unit's tokens, read by the bidirectional
backbone in the context of the criterion, to one vector (cls: the pair's first token). Besides the
2-way head, a zero-initialised scorer gives each pair an attention score, used only by the
attention-MIL aggregate (see aggregate.py). With `pairing: multilabel` the backbone reads the
unit alone and the head gives 9 logits, one per criterion (and the scorer 9 attention
scores); scoring.py turns either head's output into one logit per (unit, criterion).
DoRA comes from peft (use_dora=True on the `dora_targets` projections); adapters get no
dropout (peft would then recompute the base matmul, +33% time), so regularising dropout
sits before the head.
Saved as safetensors only: peft's adapter files, the pooler+head tensors, and config.yaml.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Gemma3TextModel

from nli_tune.core.config import TrainConfig
from nli_tune.model.backbones import load_backbone, public_id
from nli_tune.model.files import ADAPTER_DIR, CALIBRATION_FILE, CONFIG_FILE, HEAD_FILE
from nli_tune.model.prefix import frozen_layers, layer_span
from nli_tune.redsm5.load import n_criteria

# DoRA targets: attention only, or attention plus the MLP (published results favour the
# latter even on small data; a probe here did not, at one lr: so it is searchable).
TARGET_MODULES = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention_mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


class Pooler(nn.Module):
    """Mask-aware reduction of token states [B, T, H] to one vector [B, H]."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.kind = kind
        # Learned query for attention pooling; other kinds have no parameters.
        self.query = nn.Parameter(torch.zeros(hidden)) if kind == "attention" else None

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(states.dtype)
        if self.kind == "mean":
            return (states * m).sum(1) / m.sum(1).clamp(min=1)
        if self.kind == "cls":
            return states[:, 0]  # right padding: position 0 is always the real first token
        if self.kind == "max":
            return states.masked_fill(m == 0, torch.finfo(states.dtype).min).amax(1)
        if self.kind == "attention":
            scores = (states @ self.query.to(states.dtype)) / math.sqrt(states.shape[-1])
            scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
            weights = scores.softmax(-1).unsqueeze(-1)
            return (weights * states).sum(1)
        raise ValueError(f"unknown pooling {self.kind!r}")


def bidirectional_masks(config, attention_mask: torch.Tensor):
    """Gemma-3's per-layer-type attention masks, built by broadcasting, for a bidirectional
    backbone under sdpa; else the padding mask unchanged (the model builds its own).

    transformers builds the bidirectional masks through an `or_mask_function`, which takes
    its vmap path on every forward: a third of tiny-random's and ~2% of the 270M's forward
    time on CPU. The model takes a ready {layer type: mask} mapping instead (as `generate`
    passes), and these masks are the same booleans: True where query q may attend key k,
    i.e. k is not padding and, in sliding layers, |q - k| < sliding_window.
    """
    kinds = set(getattr(config, "layer_types", None) or ())
    if (
        not getattr(config, "use_bidirectional_attention", False)
        or config._attn_implementation != "sdpa"
        or not kinds <= {"full_attention", "sliding_attention"}
    ):
        return attention_mask
    n = attention_mask.shape[1]
    keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, K]: not padding
    pos = torch.arange(n, device=attention_mask.device)
    band = (pos[:, None] - pos[None, :]).abs() < config.sliding_window  # [Q, K]
    return {
        "full_attention": keys.expand(-1, 1, n, -1),
        "sliding_attention": band[None, None] & keys,
    }


class PairClassifier(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        hidden: int,
        pooling: str,
        dropout: float,
        pairing: str = "nli",
        frozen: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.pairing = pairing
        # The bottom `frozen` decoder layers carry no adapter: views that run them and the
        # adapted top apart, so their output can be cached (model/prefix.py). Kept out of
        # the module tree (they share its modules) so nothing is counted or saved twice.
        spans = (None, None)
        if frozen:
            text = next(m for m in backbone.modules() if isinstance(m, Gemma3TextModel))
            spans = (layer_span(text, 0, frozen), layer_span(text, frozen, len(text.layers)))
        object.__setattr__(self, "_spans", spans)
        # nli: (unmatched, matched) logits of one pair; multilabel: one logit per criterion.
        outputs = n_criteria() if pairing == "multilabel" else 2
        self.pooler = Pooler(pooling, hidden)
        # Gemma's hidden states have norms in the hundreds: normalise before the head so one
        # learning rate suits adapters and head alike.
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, outputs)
        # Zero head: every pair starts at P(matched) = 0.5, independent of the init seed.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Attention-MIL scorer: zero init, so attention starts as a softmax over unit logits.
        self.attend = nn.Linear(hidden, n_criteria() if pairing == "multilabel" else 1)
        nn.init.zeros_(self.attend.weight)
        nn.init.zeros_(self.attend.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 2] (unmatched, matched) per pair; multilabel: [B, 9] per unit."""
        return self.score(input_ids, attention_mask)[0]

    @property
    def bottom(self) -> nn.Module | None:
        """The frozen bottom layers (None: every layer is adapted)."""
        return self._spans[0]

    def prefix_states(self, input_ids, attention_mask) -> torch.Tensor:
        """Hidden states [B, T, H] entering the first adapted layer."""
        masks = bidirectional_masks(self.backbone.config, attention_mask)
        return self.bottom(input_ids=input_ids, attention_mask=masks).last_hidden_state

    def score(self, input_ids, attention_mask, pool_mask=None, states=None):
        """(class logits [B, 2], attention score [B]) per pair; multilabel: ([B, 9], [B, 9])
        per unit. `pool_mask` (default: every token) picks the tokens the pooler reduces;
        `states` (the cached `prefix_states` of these ids) runs only the adapted layers."""
        masks = bidirectional_masks(self.backbone.config, attention_mask)
        if states is None:
            states = self.backbone(input_ids=input_ids, attention_mask=masks).last_hidden_state
        else:
            top = self._spans[1]
            states = top(inputs_embeds=states.to(top.norm.weight.dtype), attention_mask=masks)
            states = states.last_hidden_state
        pool_mask = attention_mask if pool_mask is None else pool_mask
        pooled = self.pooler(states, pool_mask).float()
        # The head runs in fp32 even under bf16 autocast: bf16 logits (8 bits of mantissa)
        # tie many posts' scores, and calibration then cannot place a threshold between them.
        with torch.autocast(states.device.type, enabled=False):
            pooled = self.norm(pooled)
            attention = self.attend(pooled)
            if self.pairing != "multilabel":
                attention = attention.squeeze(-1)
            return self.head(self.dropout(pooled)), attention

    @contextmanager
    def merged(self) -> Iterator[None]:
        """Score with the adapters merged into the base weights (peft's merge_adapter): DoRA
        then stops recomputing its weight norm in every forward (scoring 1.25x faster on
        CPU). On exit the base weights are restored bit for bit: peft's unmerge divides the
        norm back out, which drifts by rounding from one epoch's scoring to the next."""
        layers = [m.get_base_layer() for m in self.modules() if isinstance(m, LoraLayer)]
        saved = [layer.weight.detach().clone() for layer in layers]
        self.backbone.merge_adapter()
        try:
            yield
        finally:
            self.backbone.unmerge_adapter()
            with torch.no_grad():
                for layer, weight in zip(layers, saved, strict=True):
                    layer.weight.copy_(weight)

    def head_state(self) -> dict[str, torch.Tensor]:
        """Pooler, norm and head tensors: everything trainable outside the adapters."""
        out = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        out |= {f"norm.{k}": v for k, v in self.norm.state_dict().items()}
        out |= {f"attend.{k}": v for k, v in self.attend.state_dict().items()}
        out |= {f"pooler.{k}": v for k, v in self.pooler.state_dict().items()}
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        self.norm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("norm.")})
        self.attend.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("attend.")})
        pooler = {k[7:]: v for k, v in state.items() if k.startswith("pooler.")}
        if pooler:
            self.pooler.load_state_dict(pooler)


def build_model(cfg: TrainConfig, adapter_dir: str | Path | None = None, tokenizer: bool = True):
    """(PairClassifier, tokenizer) with fresh DoRA adapters, or saved ones from adapter_dir.
    tokenizer=False skips loading it (None instead) where token ids come ready-made."""
    torch.manual_seed(cfg.seed)
    backbone, tok = load_backbone(
        cfg.model, num_layers=cfg.num_layers, attention=cfg.attention, tokenizer=tokenizer
    )
    return wrap_backbone(backbone, cfg, adapter_dir), tok


def wrap_backbone(
    backbone: nn.Module, cfg: TrainConfig, adapter_dir: str | Path | None = None
) -> PairClassifier:
    """A loaded backbone made into the PairClassifier as cfg says: gradient checkpointing,
    fresh DoRA adapters (or saved ones from adapter_dir), pooler and head. Shared by
    build_model and the GPU bench, which times the same model on a random-init backbone."""
    if cfg.grad_checkpointing:
        kwargs = {"use_reentrant": False}
        # transformers 5.2x renamed it (the old name warns); older 5.x have only the old one.
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    n_layers = backbone.config.num_hidden_layers
    frozen = frozen_layers(cfg, n_layers)
    with _peft_reads_deprecated_alias():
        if adapter_dir is None:
            lora = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=0.0,
                use_dora=True,
                target_modules=TARGET_MODULES[cfg.dora_targets],
                # adapt_layers: adapters on the top layers only (peft's own layer filter)
                layers_to_transform=list(range(frozen, n_layers)) if frozen else None,
                layers_pattern="layers" if frozen else None,
                bias="none",
            )
            backbone = get_peft_model(backbone, lora)
        else:
            backbone = PeftModel.from_pretrained(backbone, str(adapter_dir), is_trainable=True)
    hidden = backbone.config.hidden_size
    return PairClassifier(backbone, hidden, cfg.pooling, cfg.head_dropout, cfg.pairing, frozen)


@contextmanager
def _peft_reads_deprecated_alias() -> Iterator[None]:
    """peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5.2x
    deprecated: a FutureWarning on every model built (in train, bench, each fold worker)
    that the user can do nothing about. Only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        yield


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every trainable tensor (adapters, pooler, head), by parameter name."""
    return {n: p.detach().clone().cpu() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `trainable_state` tensors back into a model built with the same config."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


def parameter_counts(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}


def save_model(model: PairClassifier, cfg: TrainConfig, out_dir: str | Path, calibration=None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(str(out / ADAPTER_DIR), safe_serialization=True)
    _publish_base_name(out / ADAPTER_DIR / "adapter_config.json", cfg.model)
    save_file(model.head_state(), str(out / HEAD_FILE))
    cfg.save(out / CONFIG_FILE)
    if calibration is not None:  # the post-score decision rule travels with the model
        (out / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=1))


def _publish_base_name(adapter_config: Path, model: str) -> None:
    """peft records the folder the backbone was loaded from: for the 270M preset, this
    machine's cache path. Record the public hub id instead (or null), so no local path ships
    with the adapter; PeftModel.from_pretrained(backbone, folder) never reads it."""
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"] = public_id(model)
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True))


def load_model(model_dir: str | Path):
    """(PairClassifier, tokenizer, TrainConfig) from a save_model folder."""
    src = Path(model_dir)
    cfg = TrainConfig.from_file(src / CONFIG_FILE)
    model, tokenizer = build_model(cfg, adapter_dir=src / ADAPTER_DIR)
    model.load_head_state(load_file(str(src / HEAD_FILE)))
    return model, tokenizer, cfg
