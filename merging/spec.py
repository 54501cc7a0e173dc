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


Sparsification = Literal["none", "magnitude", "random", "outliers", "della"]


@dataclass(frozen=True)
class Method:
    """One configuration of the kernel: mergekit 0.1.5's ``GeneralizedTaskArithmeticMerge`` (or ``linear``).

    - ``consensus``: elect a sign per parameter (TIES);
    - ``sparsification``: how each task vector is thinned before the vote: ``magnitude`` keeps its
      ``density`` largest entries, ``outliers`` drops the ``gamma`` largest then keeps the next
      ``density`` (Model Breadcrumbs), ``random`` keeps each entry with probability ``density`` (DARE),
      ``della`` with a probability from ``density - epsilon`` to ``density + epsilon`` by its
      magnitude's rank in its row (DELLA);
    - ``default_rescale``: scale each thinned task vector back to its L1 norm (mergekit's ``rescale``);
    - ``averages_models``: ``linear``, a weighted average of the models themselves (no base in the sum).
    """

    name: str
    consensus: bool
    sparsification: Sparsification
    default_normalize: bool
    default_rescale: bool
    reference: str
    averages_models: bool = False

    @property
    def trims(self) -> bool:
        return self.sparsification != "none"

    @property
    def random(self) -> bool:
        """Draws its masks: the merge needs a seed to be reproducible."""
        return self.sparsification in ("random", "della")


_TA = "Ilharco et al., Task Arithmetic, arXiv 2212.04089"
_TIES = "Yadav et al., TIES-Merging, arXiv 2306.01708"
_DARE = "Yu et al., Language Models are Super Mario (DARE), arXiv 2311.03099"
_BREADCRUMBS = "Davari & Belilovsky, Model Breadcrumbs, arXiv 2312.06795"
_DELLA = "Deep et al., DELLA-Merging, arXiv 2406.11617"
METHODS = {
    m.name: m
    for m in (
        Method("ties", True, "magnitude", True, False, _TIES),
        Method("task_arithmetic", False, "none", False, False, _TA),
        Method("dare_ties", True, "random", False, True, _DARE),
        Method("dare_linear", False, "random", False, True, _DARE),
        Method("breadcrumbs", False, "outliers", False, False, _BREADCRUMBS),
        Method("breadcrumbs_ties", True, "outliers", False, False, _BREADCRUMBS),
        Method("della", True, "della", True, True, _DELLA),
        Method("della_linear", False, "della", False, True, _DELLA),
        Method("linear", False, "none", True, False, "Wortsman et al., Model Soups, arXiv 2203.05482", True),
    )
}
DEFAULT_GAMMA = 0.01  # breadcrumbs: the fraction of largest entries dropped (mergekit's default)
DEFAULT_EPSILON = 0.15  # della: the spread of keep probabilities around density (mergekit's default)

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
