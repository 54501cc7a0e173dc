"""What to merge: the method, the base, the inputs and their parameters.

Methods are data: each is one configuration of the kernel in
:mod:`merging.kernels`, with mergekit 0.1.5's defaults and a citation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from merging.errors import MergeError
from merging.sources import ByteSource

InputKind = Literal["model", "task_vector"]
TieBreak = Literal["index", "torch-cpu"]
DEFAULT_DENSITY = 0.3  # MeMo's rho; mergekit's YAML default is 1.0 (see merging.yaml_config)


@dataclass(frozen=True)
class Method:
    name: str
    consensus: bool  # elect a sign per parameter (TIES)
    trims: bool  # magnitude trim to `density`
    default_normalize: bool
    reference: str


METHODS = {
    "ties": Method("ties", True, True, True, "Yadav et al., TIES-Merging, arXiv 2306.01708"),
    "task_arithmetic": Method(
        "task_arithmetic", False, False, False, "Ilharco et al., Task Arithmetic, arXiv 2212.04089"
    ),
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


_FLOAT32_MAX = torch.finfo(torch.float32).max


def check_scale(value: float, where: str) -> float:
    """A weight or lambda: finite, and small enough that it cannot overflow a float32 merge."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or abs(value) > _FLOAT32_MAX
    ):
        raise MergeError(f"{where} must be a finite number (at most {_FLOAT32_MAX:.3g} in size), not {value!r}")
    return float(value)


def check_density(value: float, where: str) -> float:
    """The fraction of each task vector's entries a trim keeps: in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise MergeError(f"{where} must be in (0, 1] (the fraction of entries kept), not {value!r}")
    return float(value)


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

    @property
    def method_def(self) -> Method:
        return METHODS[self.method]

    @property
    def effective_normalize(self) -> bool:
        return self.method_def.default_normalize if self.normalize is None else self.normalize
