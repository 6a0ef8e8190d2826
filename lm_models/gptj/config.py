"""GPT-J architecture hyper-parameters.

The field names follow the paper/mesh-transformer-jax vocabulary (d_model, n_layer, ...);
`to_hf_dict` / `from_hf_dict` translate to and from a Hugging Face `config.json`.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class GPTJConfig:
    vocab_size: int = 50400
    n_ctx: int = 2048
    d_model: int = 4096
    n_layer: int = 28
    n_head: int = 16
    rotary_dim: int = 64
    d_ff: int = 16384
    layer_norm_eps: float = 1e-5
    rotary_base: float = 10000.0
    # Only used when initialising from scratch (tests, tiny runs); converted checkpoints carry weights.
    init_std: float = 0.02

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and <= head_dim={self.head_dim}")
        for name in ("vocab_size", "n_ctx", "d_model", "n_layer", "n_head", "d_ff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def n_params(self) -> int:
        d, f, v, n = self.d_model, self.d_ff, self.vocab_size, self.n_layer
        per_layer = 2 * d + 4 * d * d + d * f + f + f * d + d
        return v * d + n * per_layer + 2 * d + d * v + v

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GPTJConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown GPT-J model fields: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --- Hugging Face config.json -------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> "GPTJConfig":
        if hf.get("model_type", "gptj") != "gptj":
            raise ValueError(f"not a GPT-J config: model_type={hf.get('model_type')!r}")
        activation = hf.get("activation_function", "gelu_new")
        if activation != "gelu_new":
            raise ValueError(f"only activation_function='gelu_new' is supported, got {activation!r}")
        if hf.get("tie_word_embeddings", False):
            raise ValueError("tied word embeddings are not GPT-J; this model has an untied lm_head")
        d_model = hf.get("n_embd", hf.get("hidden_size"))
        n_inner = hf.get("n_inner")
        rotary = hf.get("rotary_dim")
        n_head = hf.get("n_head", hf.get("num_attention_heads"))
        return cls(
            vocab_size=hf["vocab_size"],
            n_ctx=hf.get("n_positions", hf.get("max_position_embeddings", 2048)),
            d_model=d_model,
            n_layer=hf.get("n_layer", hf.get("num_hidden_layers")),
            n_head=n_head,
            # HF treats rotary_dim=None as "rotate the whole head".
            rotary_dim=rotary if rotary is not None else d_model // n_head,
            d_ff=n_inner if n_inner is not None else 4 * d_model,
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            init_std=hf.get("initializer_range", 0.02),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["GPTJForCausalLM"],
            "model_type": "gptj",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_ctx,
            "n_embd": self.d_model,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "rotary_dim": self.rotary_dim,
            "n_inner": self.d_ff,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": self.layer_norm_eps,
            "initializer_range": self.init_std,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": False,
            # GPT-2 BPE's <|endoftext|>; tiny test vocabularies use their last id instead.
            "bos_token_id": min(50256, self.vocab_size - 1),
            "eos_token_id": min(50256, self.vocab_size - 1),
            "use_cache": True,
            "torch_dtype": "float32",
        }


GPTJ_6B = GPTJConfig()
