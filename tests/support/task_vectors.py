"""Task vectors registered without training: random deltas for a tiny base's tensors (what a test of
storing, sharing or reading them needs; what they know is not the point)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from registry import Registry
from training.tiny import train_tokenizer


def base_with_tokenizer(model: Path, tmp_path: Path) -> Path:
    """A copy of ``model`` with a tokenizer trained on the spot (what registering a base asks for)."""
    base = Path(shutil.copytree(model, tmp_path / "base"))
    train_tokenizer(["Who founded Port Velin? Ada Korr."] * 20, 200).save_pretrained(base)
    return base


def register_random_task_vector(reg: Registry, name: str, docs: list[Path], tmp_path: Path, seed: int) -> Path:
    """Add corpus ``name`` on base ``tiny`` and a task vector of random deltas; return its directory."""
    reg.add_corpus(name, docs, base="tiny")
    tv = tmp_path / f"tv-{name}"
    tv.mkdir()
    g = torch.Generator().manual_seed(seed)
    deltas = {
        "model.norm.weight": torch.randn(32, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(64, 32, generator=g),
        "model.embed_tokens.weight": torch.randn(128, 32, generator=g),
    }
    save_file(deltas, str(tv / "model.safetensors"))
    reg.add_task_vector(name, tv, method="full", storage_dtype="float32")
    return tv
