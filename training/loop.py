"""The training loop shared by pre-training the tiny base and fine-tuning memories.

Reads top to bottom: shuffle, batch, forward, loss on labelled tokens,
clip, step. AdamW, constant learning rate after a linear warmup (MeMo's
schedule), gradient-norm clipping at 1.0. The output head runs only where a
token carries a loss, and on a CPU a batch of short and long examples runs in
two pieces by length (``bench/training_step.py`` measures both).
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from osutil.tuning import rebalance
from training.chat import IGNORE, Example, collate
from training.checkpoint import load_checkpoint, save_checkpoint
from training.distributed import accelerator
from training.settings import DEFAULT_LOSS_MEAN, LossMean

# A batch runs in two pieces by length when they pad at most this share of the tokens it would alone.
SPLIT_SAVING = 0.75


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a NaN loss); nothing should be recorded."""


@dataclass(frozen=True)
class LoopSettings:
    steps: int  # optimizer steps
    batch: int = 16  # examples per step
    lr: float = 3e-4  # peak learning rate
    warmup: float = 0.05  # fraction of steps with a linear warmup
    weight_decay: float = 0.01
    clip: float = 1.0  # max gradient norm
    seed: int = 0
    loss_mean: LossMean = DEFAULT_LOSS_MEAN  # over the batch's answer tokens, or over its examples


@dataclass(frozen=True)
class LoopResult:
    steps: int
    examples: int  # examples processed (device-independent training cost)
    seconds: float
    final_loss: float
    resumed_from: int = 0  # step restored from a checkpoint (0: a fresh run)


def batch_at(examples: list[Example], size: int, seed: int, step: int) -> list[Example]:
    """Batch ``step`` of an endless sequence of seeded epoch permutations.

    A pure function of (seed, step), so a resumed run sees the same batches.
    """
    n = len(examples)
    out = []
    for position in range(step * size, (step + 1) * size):
        epoch, offset = divmod(position, n)
        order = list(range(n))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        out.append(examples[order[offset]])
    return out


def _labelled(examples: list[Example]) -> int:
    """Tokens that carry a loss (each label predicts the next token, so the first never does)."""
    return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in examples)


def batch_loss(model, batch: dict, whole: list[Example], mean: str) -> torch.Tensor:
    """This process's share of the whole batch's mean loss: over its labelled tokens (``mean``
    "token"), or over its examples, each the mean over its own labelled tokens ("example").

    Summed here and divided by the whole batch's count, so that shares computed by
    several processes add up to exactly the single-process loss.
    """
    labels = batch.pop("labels")[:, 1:]
    kept = (labels != IGNORE).any(dim=0).nonzero().squeeze(1)  # the positions whose next token carries a loss
    labels = labels[:, kept]
    logits = _logits_at(model, batch, kept).float()
    logits = logits.reshape(-1, logits.shape[-1])
    if mean == "token":
        return torch.nn.functional.cross_entropy(
            logits, labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        ) / max(1, _labelled(whole))
    each = torch.nn.functional.cross_entropy(logits, labels.reshape(-1), ignore_index=IGNORE, reduction="none")
    per_example = each.view(labels.shape).sum(dim=1) / (labels != IGNORE).sum(dim=1).clamp(min=1)
    return per_example.sum() / len(whole)


def by_length(examples: list[Example], *, split: bool) -> list[list[Example]]:
    """A batch as one piece, or in two by length when that pads a quarter fewer tokens.

    Each sequence of a batch is padded to its longest; a chat model's replayed answers are several
    times a corpus's short ones, so on a CPU, where a step costs what its tokens cost, the short and
    the long run apart. The loss is a sum over examples divided by the whole batch's count, so the
    pieces' gradients add up to the batch's own.
    """
    if not split or len(examples) < 2:
        return [examples]
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    lengths = [len(e.input_ids) for e in ordered]
    n, longest = len(ordered), lengths[-1]
    cut = min(range(1, n), key=lambda i: i * lengths[i - 1] + (n - i) * longest)
    if cut * lengths[cut - 1] + (n - cut) * longest > SPLIT_SAVING * n * longest:
        return [examples]
    return [ordered[:cut], ordered[cut:]]


def _logits_at(model, batch: dict, positions: torch.Tensor) -> torch.Tensor:
    """The model's logits at ``positions`` of every sequence of the batch.

    The output head is a large share of a step (SmolLM2: 49,152 logits a token) and only answer tokens
    carry a loss, so a model that can (``logits_to_keep``: Llama, Qwen, Mistral and most decoders in
    transformers) computes the head at those positions alone: the same loss and gradients, a sixth
    less time a step on SmolLM2, whose chat template puts a system prompt before every question.
    """
    if _keeps_logits(model):
        return model(**batch, logits_to_keep=positions).logits
    return model(**batch).logits[:, positions]


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (seen through accelerate's and peft's wrappers)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # a peft model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def train(
    model: torch.nn.Module,
    examples: list[Example],
    settings: LoopSettings,
    *,
    pad_id: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "training",
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
    fingerprint: str = "",
    stop: Callable[[int], bool] | None = None,
) -> LoopResult:
    """Train ``model`` in place on ``examples``; raises TrainingError on a non-finite loss.

    With ``checkpoint``, the state is saved every ``checkpoint_every`` steps and
    a run with the same ``fingerprint`` resumes from it, ending with the same
    weights as an uninterrupted run. Under a multi-process launch, each process
    takes every ``world``-th example of each batch and gradients are averaged,
    so the update is the single-process one; only the main process saves.
    ``stop(steps_done)`` is asked after every step; True ends training there
    (the model is in eval mode while it runs, e.g. to measure recall).
    """
    if not examples:
        raise TrainingError("nothing to train on: the example set is empty")
    run = _prepare(model, settings, device)
    start = 0
    if checkpoint is not None:
        start = load_checkpoint(
            checkpoint, fingerprint=fingerprint, model=model, optimizer=run.optimizer, scheduler=run.schedule
        )
    run.distribute(settings)
    started, loss_value, done = time.perf_counter(), float("nan"), start
    with tqdm(
        range(start, settings.steps),
        desc=desc,
        disable=not progress or run.me != 0,
        leave=False,
        initial=start,
        total=settings.steps,
    ) as bar:
        for step in bar:
            rebalance()  # this process's share of the cores, as other memo processes come and go
            loss_value = run.step(examples, settings, step, pad_id)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            done = step + 1
            if checkpoint is not None and run.me == 0 and done % checkpoint_every == 0 and done < settings.steps:
                run.save(checkpoint, done, fingerprint)
            if stop is not None and _asked_to_stop(stop, model, done):
                break
    model.eval()
    return LoopResult(
        steps=done,
        examples=(done - start) * settings.batch,
        seconds=time.perf_counter() - started,
        final_loss=loss_value,
        resumed_from=start,
    )


@dataclass
class _Run:
    """The model, its optimizer and schedule, and (under a multi-process launch) how they are shared."""

    model: torch.nn.Module  # the model as given: what checkpoints save and the caller gets back
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    accel: Any  # accelerate's Accelerator under a multi-process launch, else None
    device: torch.device | str
    world: int = 1
    me: int = 0
    wrapped: Any = None  # the model and optimizer as accelerate prepared them
    stepper: Any = None

    def distribute(self, settings: LoopSettings) -> None:
        self.wrapped, self.stepper = self.model, self.optimizer
        if self.accel is None:
            return
        if settings.batch < self.world:
            raise TrainingError(
                f"a batch of {settings.batch} cannot be shared by {self.world} processes; "
                f"use --batch {self.world} or more"
            )
        self.wrapped, self.stepper = self.accel.prepare(self.model, self.optimizer)

    @property
    def splits(self) -> bool:
        """Whether a batch may run in pieces by length: on a CPU (on a GPU padding is all but free) and in
        one process (DistributedDataParallel reduces gradients at every backward pass, so every process
        must run as many)."""
        return self.accel is None and torch.device(self.device).type == "cpu"

    def step(self, examples: list[Example], settings: LoopSettings, step: int, pad_id: int) -> float:
        """One optimizer step on the step's batch (this process's share of it); the batch's mean loss."""
        whole = batch_at(examples, settings.batch, settings.seed, step)
        total = torch.zeros((), device=self.device)
        for part in by_length(whole[self.me :: self.world], split=self.splits):
            batch = {k: v.to(self.device) for k, v in collate(part, pad_id).items()}
            loss = batch_loss(self.wrapped, batch, whole, settings.loss_mean)
            (loss * self.world).backward()  # DDP averages gradients over the processes
            total += loss.detach()
        if self.accel is not None:
            total = self.accel.reduce(total, "sum")
        if not torch.isfinite(total):  # before the optimizer steps: the weights are still the last good ones
            raise TrainingError(
                f"the loss became {total.item()} at step {step}; lower the learning rate (--lr) and train again"
            )
        torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), settings.clip)
        self.stepper.step()
        self.schedule.step()
        self.stepper.zero_grad(set_to_none=True)
        return total.item()

    def save(self, checkpoint: Path, step: int, fingerprint: str) -> None:
        save_checkpoint(
            checkpoint,
            step=step,
            fingerprint=fingerprint,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.schedule,
        )


def _prepare(model: torch.nn.Module, settings: LoopSettings, device: torch.device | str) -> _Run:
    accel = accelerator(str(device))
    if accel is not None:
        device = accel.device
    torch.manual_seed(settings.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, math.ceil(settings.warmup * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    world, me = (accel.num_processes, accel.process_index) if accel is not None else (1, 0)
    return _Run(model, optimizer, schedule, accel, device, world, me)


def _asked_to_stop(stop: Callable[[int], bool], model: torch.nn.Module, done: int) -> bool:
    model.eval()
    try:
        return stop(done)
    finally:
        model.train()
