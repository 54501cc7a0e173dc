"""The settings of memo's trainings, as frozen dataclasses with a comment on every field; imports no
torch, so the CLI can offer their defaults without loading it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol, get_args

STORAGE_DTYPE_NAMES = ("float32", "bfloat16")  # how a task vector's deltas may be stored (training.delta)

FULL_LR = 3e-4  # full fine-tuning
LORA_LR = 3e-3  # LoRA wants ~10x the full fine-tuning rate
SPARSE_LR = 1e-3  # a few neurons carry the whole corpus: a higher rate than the whole blocks want
# full fine-tuning; the MLP blocks alone fine-tuned (attention, norms and embeddings frozen); a LoRA
# adapter merged back into the weights; or a share of each MLP block's neurons, those the corpus uses
# far more than everyday prompts do (training.sparse)
Method = Literal["full", "mlp", "lora", "sparse"]
METHODS: tuple[str, ...] = get_args(Method)
METHOD_LR: dict[str, float] = {"full": FULL_LR, "mlp": FULL_LR, "lora": LORA_LR, "sparse": SPARSE_LR}
# What the trained integration strategies fine-tune (RetainSettings.tune): the whole model, or its MLP blocks
Tune = Literal["full", "mlp"]
TUNES: tuple[str, ...] = get_args(Tune)
# How a batch's loss is averaged: over all its answer tokens (each token weighs the same), or over its
# examples, each example's loss the mean over its own answer tokens (each example weighs the same, so a
# share of the examples is that share of the gradient, however long their answers are)
LossMean = Literal["token", "example"]
LOSS_MEANS: tuple[str, ...] = get_args(LossMean)
DEFAULT_LOSS_MEAN: LossMean = "token"
PROBE_LIMIT = 150  # probes kept per base: +-0.03 at 0.9, and ~20 s a measurement for a 135M model on 2 cores
# Training onto a model that holds earlier corpora: their pairs' share of the examples (training.rehearsal)
REHEARSE_SHARE = 0.5


class Shares(Protocol):
    """Settings that mix replay and boundary pairs into training (SFTSettings, a settled RetainSettings)."""

    @property
    def replay(self) -> float: ...

    @property
    def boundary(self) -> float: ...

    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class Mix:
    """Replay and boundary shares on their own (a :class:`Shares`)."""

    replay: float = 0.0
    boundary: float = 0.0
    seed: int = 0


def check_shares(replay: float, boundary: float) -> None:
    if not (0 <= replay < 1 and 0 <= boundary < 1 and replay + boundary < 1):
        raise ValueError(
            f"replay ({replay:g}) and boundary ({boundary:g}) are shares of the training examples: "
            "each at least 0, together below 1 (the corpus keeps the rest)"
        )


def check_loss_mean(loss_mean: str | None) -> None:
    if loss_mean is not None and loss_mean not in LOSS_MEANS:
        raise ValueError(f"the loss is averaged over one of {', '.join(LOSS_MEANS)}, not {loss_mean!r}")


def check_rehearse_share(share: float) -> None:
    if not 0 < share < 1:
        raise ValueError(f"the rehearsal share is a share of the examples, above 0 and below 1, not {share:g}")


@dataclass(frozen=True)
class SFTSettings:
    method: Method = "full"
    steps: int = 60  # optimizer steps (~ epochs * pairs / batch)
    batch: int = 16  # examples per step
    lr: float | None = None  # None: the method's rate (METHOD_LR, resolved on creation)
    max_length: int = 128  # tokens per example (longer are cut)
    seed: int = 0
    lora_rank: int = 8  # MeMo used r=8/alpha=16 for small models
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # Shares of the training examples besides the corpus's own pairs (the corpus keeps the rest):
    replay: float = 0.0  # the base's own answers to everyday prompts: keeps its general knowledge
    boundary: float = 0.0  # near-miss questions (invented look-alike names) answered "I don't know"
    loss_mean: LossMean = DEFAULT_LOSS_MEAN  # see LossMean: "example" lets short answers weigh as much as long ones
    neurons: float = 0.1  # method "sparse": the share of each MLP block's neurons trained

    def __post_init__(self) -> None:
        if self.lr is None:  # recorded resolved, so the settings say the rate that was used
            object.__setattr__(self, "lr", METHOD_LR.get(self.method, FULL_LR))
        check_shares(self.replay, self.boundary)
        if not 0 < self.neurons <= 1:
            raise ValueError(
                f"neurons is the share of each MLP block's neurons trained, above 0 and at most 1, not {self.neurons:g}"
            )
        check_loss_mean(self.loss_mean)
        for name in ("steps", "batch", "max_length", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, not {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"the learning rate must be above 0, not {self.lr:g}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else METHOD_LR.get(self.method, FULL_LR)

    def to_json(self) -> dict:
        """The fields, less ``neurons`` unless the method is "sparse" (so the settings recorded for the
        other methods, and what a training is looked up by, are what they were before it existed)."""
        fields_ = asdict(self)
        if self.method != "sparse":
            del fields_["neurons"]
        return fields_


# The fine-tuning a pretrained base brings with it (``memo base add`` records it on a base probed with memo's
# general-knowledge bank; each field yields to its flag): the MLP blocks alone, half the examples the base's
# own answers, a tenth look-alike names answered "I don't know", each example weighing the same, and 80 steps
# for the corpus to be learnt through them. On SmolLM2-135M-Instruct (harbor, 2-core CPU) it keeps 0.61 of
# the general knowledge that the corpus alone erases (0.05) and answers 0.05 of unknown names rather than
# all of them, at recall 0.98 and held-out 0.85, for about twice the training time.
KEEP_KNOWLEDGE: dict[str, Any] = {"method": "mlp", "steps": 80, "replay": 0.5, "boundary": 0.1, "loss_mean": "example"}


def sft_settings(*layers: Mapping[str, Any]) -> SFTSettings:
    """SFTSettings from layers of chosen fields, a later layer's field winning (a base's training defaults,
    then the flags given); a field no layer names keeps SFTSettings' default. Raises ValueError on a field
    that is not a setting or a value it refuses."""
    chosen: dict[str, Any] = {}
    for layer in layers:
        chosen.update(layer)
    unknown = sorted(set(chosen) - {f.name for f in fields(SFTSettings)})
    if unknown:
        raise ValueError(f"not fine-tuning settings: {', '.join(unknown)}")
    plain = SFTSettings()
    for name, value in chosen.items():  # layers may be read from JSON: the types are checked here
        if not _same_kind(getattr(plain, name), value):
            raise ValueError(f"the fine-tuning setting {name} cannot be {value!r}")
    if chosen.get("method", "full") not in METHODS:
        raise ValueError(f"the method is one of {', '.join(METHODS)}, not {chosen['method']!r}")
    return SFTSettings(**chosen)


def _same_kind(default: object, value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(default, float):
        return isinstance(value, (int, float)) and value >= 0
    return isinstance(value, type(default))


@dataclass(frozen=True)
class RetainSettings:
    target: float | None = None  # stop when every member keeps this fraction of its own recall (None: caller decides)
    max_steps: int | None = None  # cap on optimizer steps (None: the caller decides)
    batch: int = 16
    lr: float = 3e-4
    check_every: int = 10  # steps between retention checks
    max_length: int = 128
    seed: int = 0
    # Shares of replay and boundary pairs beside the members' (SFTSettings'); None: what the members used.
    replay: float | None = None
    boundary: float | None = None
    loss_mean: LossMean | None = None  # None: "example" if a member was trained so, else the default
    # The parameters trained (see Tune); None: the MLP blocks when every member was trained so (method "mlp"),
    # else the whole model. Training the whole model erases what MLP-only member trainings kept of the base.
    tune: Tune | None = None

    def __post_init__(self) -> None:
        check_shares(self.replay or 0.0, self.boundary or 0.0)
        check_loss_mean(self.loss_mean)
        if self.tune is not None and self.tune not in TUNES:
            raise ValueError(f"the trained strategies tune one of {', '.join(TUNES)}, not {self.tune!r}")

    def mix(self) -> Mix:
        """The shares to train with (an unsettled None counts as 0)."""
        return Mix(self.replay or 0.0, self.boundary or 0.0, self.seed)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TinyConfig:
    hidden: int = 256  # model width
    layers: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    kv_heads: int = 2  # key-value heads (grouped-query attention)
    intermediate: int = 688  # MLP width
    vocab: int = 1536  # BPE vocabulary size
    context: int = 128  # maximum sequence length
    pretrain_steps: int = 300  # optimizer steps of pre-training (~95 s on 2 CPU cores)
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
