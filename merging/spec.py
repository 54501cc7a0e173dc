"""What to merge: the method (:mod:`merging.methods`), the base, the inputs and their parameters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from merging.errors import MergeError
from merging.methods import (
    DEFAULT_DENSITY,
    DEFAULT_EPSILON,
    DEFAULT_GAMMA,
    METHODS,
    Method,
    check_density,
    check_scale,
)
from merging.sources import ByteSource

InputKind = Literal["model", "task_vector"]
TieBreak = Literal["index", "torch-cpu"]


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise MergeError(f"unknown dtype {name!r}; use one of {', '.join(sorted(DTYPES))}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class MergeInput:
    """One fine-tuned model directory, or one stored task vector (deltas) directory.

    With ``sources``, the weight files are read from them (e.g. blobs streamed from a bucket) and
    ``path`` only names the input.
    """

    path: Path
    kind: InputKind = "model"
    weight: float = 1.0
    density: float = DEFAULT_DENSITY
    sources: tuple[ByteSource, ...] = ()
    gamma: float = DEFAULT_GAMMA  # breadcrumbs only
    epsilon: float = DEFAULT_EPSILON  # della only


@dataclass(frozen=True)
class MergeSpec:
    method: str
    base: Path
    inputs: tuple[MergeInput, ...]
    normalize: bool | None = None  # None: the method's default (ties: True, task_arithmetic: False)
    lam: float = 1.0  # mergekit's `lambda`, applied after the division
    dtype: str | None = None  # compute dtype; None: the inputs' common dtype
    out_dtype: str | None = None  # None: the compute dtype (mergekit's behaviour)
    tie_break: TieBreak = "index"
    rescale: bool | None = None  # None: the method's default (dare_*, della*: True)
    seed: int | None = None  # random methods; None: the engine draws one and records it

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MergeError(f"unknown merge method {self.method!r}; memo merges {', '.join(METHODS)}")
        if not self.inputs:
            raise MergeError("a merge needs at least one model or task vector")
        if self.tie_break not in ("index", "torch-cpu"):
            raise MergeError(f"unknown tie break {self.tie_break!r}; use 'index' or 'torch-cpu'")
        parse_dtype(self.dtype)
        parse_dtype(self.out_dtype)
        # Checked here, before any tensor is read, so a bad value fails at once and names itself.
        check_scale(self.lam, "lambda")
        for n, inp in enumerate(self.inputs):
            check_scale(inp.weight, f"the weight of input {n} ({inp.path.name})")
            check_density(inp.density, f"the density of input {n} ({inp.path.name})")
            self._check_method_parameters(n, inp)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise MergeError(f"the seed must be a non-negative integer, not {self.seed!r}")

    def _check_method_parameters(self, n: int, inp: MergeInput) -> None:
        where = f"input {n} ({inp.path.name})"
        sparsification = self.method_def.sparsification
        if sparsification == "outliers" and not (isinstance(inp.gamma, (int, float)) and 0 <= inp.gamma < 1):
            raise MergeError(f"the gamma of {where} must be in [0, 1) (the fraction of largest entries dropped)")
        if sparsification == "della" and inp.density < 1:
            eps = inp.epsilon
            if not isinstance(eps, (int, float)) or not (inp.density - eps > 0 and inp.density + eps < 1):
                raise MergeError(
                    f"the epsilon of {where} must keep density +/- epsilon in (0, 1) "
                    f"(density {inp.density:g}, epsilon {eps!r})"
                )

    @property
    def method_def(self) -> Method:
        return METHODS[self.method]

    @property
    def effective_normalize(self) -> bool:
        return self.method_def.default_normalize if self.normalize is None else self.normalize

    @property
    def effective_rescale(self) -> bool:
        """Rescaling thins nothing without a sparsification, so it is off there whatever was asked."""
        wanted = self.method_def.default_rescale if self.rescale is None else self.rescale
        return wanted and self.method_def.trims
