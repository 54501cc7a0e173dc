"""Tiny base + fine-tuned model directories, a dense float64 TIES reference, mergekit runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.support.models import build_tiny_llama


def load_dir(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def make_finetunes(
    root: Path,
    *,
    k: int,
    dtype: torch.dtype = torch.float32,
    noise: float = 0.01,
    hidden: int = 32,
    shards: int = 1,
    seed: int = 0,
) -> tuple[Path, list[Path]]:
    """A base and ``k`` fine-tunes (base + Gaussian noise), each a model directory."""
    base = build_tiny_llama(root / "base", seed=seed, hidden=hidden, dtype=dtype)
    state = load_dir(base)
    models = []
    for i in range(k):
        g = torch.Generator().manual_seed(1000 * seed + i + 1)
        ft = {
            n: (t.double() + noise * torch.randn(t.shape, generator=g, dtype=torch.float64)).to(t.dtype)
            for n, t in state.items()
        }
        models.append(save_model(root / f"ft{i}", ft, base, shards=shards))
    return base, models


def save_model(directory: Path, tensors: dict[str, torch.Tensor], like: Path, *, shards: int = 1) -> Path:
    directory.mkdir(parents=True)
    shutil.copy(like / "config.json", directory / "config.json")
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for j, group in enumerate(groups):
        fname = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def dense_reference(
    method: str, base: dict, models: list[dict], *, densities, weights, normalize=None, lam=1.0, dtype=torch.float32
) -> dict[str, torch.Tensor]:
    """A plain, whole-tensor float64 TIES / task arithmetic; deltas first rounded to ``dtype``.

    Trimming uses a stable descending sort, so ties go to the lowest index.
    """
    normalize = (method == "ties") if normalize is None else normalize
    out = {}
    for name, b in base.items():
        bd = b.to(dtype)
        deltas = []
        for m, dens in zip(models, densities):
            d = (m[name].to(dtype) - bd).double().reshape(-1)
            n = d.numel()
            if method == "ties" and dens < 1:
                k = 0 if dens <= 0 else max(1, int(dens * n))
                order = torch.sort(d.abs(), descending=True, stable=True).indices
                mask = torch.zeros(n, dtype=torch.float64)
                mask[order[:k]] = 1
                d = d * mask
            deltas.append(d)
        w = torch.tensor(weights, dtype=torch.float64).view(-1, 1)
        wd = torch.stack(deltas) * w
        if method == "ties":
            majority = torch.where(wd.sum(0) >= 0, 1.0, -1.0)
            agree = torch.sign(wd) == majority
            mixed = (wd * agree).sum(0)
            div = (w * agree).sum(0)
            div[div == 0] = 1
        else:
            mixed = wd.sum(0)
            div = w.sum()
        if normalize:
            mixed = mixed / div
        out[name] = (bd.double().reshape(-1) + lam * mixed).reshape(b.shape)
    return out


def write_config(
    path: Path,
    method: str,
    base: Path,
    models: list[Path],
    *,
    densities=None,
    weights=None,
    dtype: str | None = None,
    **shared,
) -> Path:
    config = {"merge_method": method, "base_model": str(base), "models": []}
    for i, m in enumerate(models):
        params = {"weight": (weights or [1.0] * len(models))[i]}
        if densities is not None:
            params["density"] = densities[i]
        config["models"].append({"model": str(m), "parameters": params})
    if shared:
        config["parameters"] = shared
    if dtype:
        config["dtype"] = dtype
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_mergekit(config: Path, out: Path) -> Path:
    """mergekit's own merge, in process (as `mergekit-yaml CONFIG OUT` runs it)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    merge_config = MergeConfiguration.model_validate(yaml.safe_load(config.read_text()))
    run_merge(merge_config, str(out), MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    return out
