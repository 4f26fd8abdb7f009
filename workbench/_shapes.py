"""Named configurations for ``random:<shape>`` models (tests and benchmarks; no download)."""

from __future__ import annotations

from typing import Any

from ._tokenizer import BYTE_VOCAB_SIZE

# Tiny shapes: a few layers, d_model 64, the byte tokenizer's vocabulary. One per family.
_TINY_COMMON: dict[str, Any] = {
    "vocab_size": BYTE_VOCAB_SIZE,
    "tie_word_embeddings": False,
    "bos_token_id": 256,
    "eos_token_id": 258,
    "pad_token_id": 259,
}

TINY_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-llama": (
        "llama",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        ),
    ),
    "tiny-mistral": (
        "mistral",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            sliding_window=None,
        ),
    ),
    "tiny-qwen2": (
        "qwen2",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        ),
    ),
    "tiny-qwen3": (
        "qwen3",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=1024,
        ),
    ),
    "tiny-gemma2": (
        "gemma2",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=64,
            max_position_embeddings=1024,
        ),
    ),
    "tiny-gemma3": (
        "gemma3_text",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=64,
            max_position_embeddings=1024,
        ),
    ),
    "tiny-gpt2": ("gpt2", dict(n_embd=64, n_layer=3, n_head=4, n_positions=1024)),
    "tiny-gpt-neox": (
        "gpt_neox",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=1024,
            use_parallel_residual=True,
        ),
    ),
}

# Full-size shapes with random weights, for benchmarks (timings do not depend on weight values).
FULL_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": (
        "llama",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            tie_word_embeddings=True,
            rope_theta=100000.0,
            max_position_embeddings=8192,
        ),
    ),
    "qwen2.5-0.5b": (
        "qwen2",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        ),
    ),
    "qwen2.5-7b": (
        "qwen2",
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            tie_word_embeddings=False,
            max_position_embeddings=32768,
        ),
    ),
    "qwen3-8b": (
        "qwen3",
        dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151936,
            tie_word_embeddings=False,
            max_position_embeddings=40960,
        ),
    ),
    "llama3.1-8b": (
        "llama",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=False,
            rope_theta=500000.0,
            max_position_embeddings=131072,
        ),
    ),
}


def shape_names() -> list[str]:
    return sorted(TINY_SHAPES) + sorted(FULL_SHAPES)


def make_config(shape: str):
    """Build the ``PretrainedConfig`` of a named shape (raises ``KeyError`` for unknown names)."""
    from transformers import AutoConfig

    if shape in TINY_SHAPES:
        model_type, kwargs = TINY_SHAPES[shape]
        kwargs = {**_TINY_COMMON, **kwargs}
    else:
        model_type, kwargs = FULL_SHAPES[shape]
    return AutoConfig.for_model(model_type, **kwargs)
