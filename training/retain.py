"""Fine-tuning a model until it keeps every member corpus: the training step of the integration strategies.

A merged model (``ties+heal``), the channel's current model (``warm``) or the
base (``retrain``) is fine-tuned on all member corpora's reflections, and
every ``check_every`` steps each member's retention (recall / the corpus's
own model's recall) is measured on its check questions. Training stops as
soon as the lowest retention reaches the target, or at the step cap. A check
before the first step means a model that already keeps everything costs
nothing. Seeded batches (see :mod:`training.loop`) make it reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from training.chat import QAPair, encode
from training.evaluate import teacher_forced_exact
from training.loop import LoopSettings, train
from training.settings import DEFAULT_LOSS_MEAN, RetainSettings
from training.sft import Mixed, mlp_only


@dataclass(frozen=True)
class Member:
    """One member corpus: what to train on, what to check, and its own model's recall."""

    name: str
    pairs: list[QAPair]  # all its reflections (trained on)
    checks: list[QAPair]  # the questions its retention is measured on
    own: float | None  # its own model's exact match on ``checks`` (None or 0: not measured)


@dataclass
class RetainResult:
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    check_seconds: float = 0.0
    reached: bool = False
    history: list[dict] = field(default_factory=list)  # {"step", "retention": {corpus: value}}

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "examples": self.examples,
            "train_seconds": self.train_seconds,
            "check_seconds": self.check_seconds,
            "reached": self.reached,
            "checks": self.history,
        }


def train_until_retained(
    model,
    tokenizer,
    members: list[Member],
    settings: RetainSettings,
    *,
    device="cpu",
    progress: bool = True,
    desc: str = "healing",
    keep: Mixed | None = None,
) -> RetainResult:
    """Train ``model`` in place on every member's pairs and what ``keep`` mixes in beside them (replay and
    boundary pairs, in rounds, as the member's own trainings were) until each member keeps
    ``settings.target``."""
    if settings.target is None:
        raise ValueError("RetainSettings.target must be set before training")
    result = RetainResult()

    def check(step: int) -> bool:
        started = time.perf_counter()
        retention = _retention(model, tokenizer, members, settings, device)
        result.check_seconds += time.perf_counter() - started
        result.history.append({"step": step, "retention": retention})
        result.reached = all(v is None or v >= settings.target for v in retention.values())
        return result.reached

    model.to(device).eval()
    cap = settings.max_steps or 0
    if check(0) or cap == 0:
        return result
    if settings.tune == "mlp":
        mlp_only(model)
    pairs = (keep or Mixed(1, [])).around([p for m in members for p in m.pairs])
    examples = [encode(tokenizer, p, settings.max_length) for p in pairs]
    checked_at = result.check_seconds
    loop = train(
        model,
        examples,
        LoopSettings(
            steps=cap,
            batch=settings.batch,
            lr=settings.lr,
            seed=settings.seed,
            loss_mean=settings.loss_mean or DEFAULT_LOSS_MEAN,
        ),
        pad_id=tokenizer.pad_token_id,
        device=device,
        progress=progress,
        desc=desc,
        stop=lambda step: (step % settings.check_every == 0 or step == cap) and check(step),
    )  # the last step is always checked
    result.steps, result.examples = loop.steps, loop.examples
    result.train_seconds = loop.seconds - (result.check_seconds - checked_at)
    return result


def _retention(model, tokenizer, members: list[Member], settings: RetainSettings, device) -> dict:
    out: dict[str, float | None] = {}
    for m in members:
        if not m.own or not m.checks:
            out[m.name] = None
            continue
        kept = teacher_forced_exact(model, tokenizer, m.checks, max_length=settings.max_length, device=device)
        out[m.name] = kept / m.own
    return out
