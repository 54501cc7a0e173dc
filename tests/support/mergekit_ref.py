"""mergekit's own per-tensor merge, called directly: the reference for parity tests."""

from __future__ import annotations

import torch


def mergekit_merge(
    method: str,
    base: torch.Tensor,
    models: list[torch.Tensor],
    *,
    densities: list[float],
    weights: list[float],
    normalize: bool | None = None,
    lam: float = 1.0,
) -> torch.Tensor:
    from mergekit.merge_methods.base import TensorGroup
    from mergekit.merge_methods.registry import get

    merger = get(method)
    group = TensorGroup.from_tensors([base, *models], base_index=0)
    ids = range(1, len(models) + 1)
    defaults = {p.name: p.default for p in merger.spec.parameters}
    params = {
        "density": dict(zip(ids, densities)),
        "weight": dict(zip(ids, weights)),
        "normalize": defaults["normalize"] if normalize is None else normalize,
        "rescale": defaults["rescale"],
        "lambda": lam,
        "int8_mask": False,
    }
    return merger.merge_group(group, **params)
