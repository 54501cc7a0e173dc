"""The merge methods as data, and the checks on their parameters; imports no torch, so the CLI and
the registry can name methods and defaults without loading it.

Each method is one configuration of the kernel in :mod:`merging.kernels`, with mergekit 0.1.5's
defaults and a citation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from merging.errors import MergeError

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


_FLOAT32_MAX = (2 - 2**-23) * 2.0**127  # torch.finfo(torch.float32).max


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
