"""Tiny base models built on the spot, for the demo and the tests (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinyConfig:
    hidden: int = 64  # model width
    layers: int = 2  # transformer blocks
    heads: int = 4  # attention heads (2 key-value heads)
    vocab: int = 512  # vocabulary size
    context: int = 256  # maximum sequence length


def create_tiny_base(directory: Path, *, seed: int = 0, config: TinyConfig = TinyConfig()) -> Path:
    """Save a deterministic random-init Llama-style model as a Hugging Face directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=config.vocab, hidden_size=config.hidden,
                intermediate_size=4 * config.hidden, num_hidden_layers=config.layers,
                num_attention_heads=config.heads, num_key_value_heads=max(1, config.heads // 2),
                max_position_embeddings=config.context, tie_word_embeddings=False,
            )
        )
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(directory)
    return directory
