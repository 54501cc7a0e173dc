"""Tiny Hugging Face models built on the spot (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from training.tiny import TinyConfig

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
HARBOR = EXAMPLES / "harbor"
# A tiny base that pre-trains in seconds: what most registry tests train on.
SMALL = TinyConfig(
    hidden=64, layers=2, heads=4, kv_heads=2, intermediate=172, vocab=512, pretrain_steps=60, batch=32, lr=2e-3
)


def build_tiny_llama(
    directory: Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    vocab: int = 128,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
) -> Path:
    """Save a deterministic tiny Llama (random init from ``seed``) as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    return directory
