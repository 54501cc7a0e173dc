"""The training loop shared by pre-training the tiny base and fine-tuning memories.

Reads top to bottom: shuffle, batch, forward, loss on labelled tokens,
clip, step. AdamW, constant learning rate after a linear warmup (MeMo's
schedule), gradient-norm clipping at 1.0.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from training.chat import Example, collate


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


@dataclass(frozen=True)
class LoopResult:
    steps: int
    examples: int  # examples processed (device-independent training cost)
    seconds: float
    final_loss: float


def _batches(examples: list[Example], batch: int, rng: random.Random):
    order: list[int] = []
    while True:
        if len(order) < batch:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        yield [examples[i] for i in order[:batch]]
        del order[:batch]


def train(model: torch.nn.Module, examples: list[Example], settings: LoopSettings, *, pad_id: int,
          device: torch.device | str = "cpu", progress: bool = True, desc: str = "training") -> LoopResult:
    """Train ``model`` in place on ``examples``; raises TrainingError on a non-finite loss."""
    if not examples:
        raise TrainingError("nothing to train on: the example set is empty")
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, math.ceil(settings.warmup * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    batches = _batches(examples, settings.batch, rng)
    started, loss_value = time.perf_counter(), float("nan")
    with tqdm(range(settings.steps), desc=desc, disable=not progress, leave=False) as bar:
        for _ in bar:
            batch = {k: v.to(device) for k, v in collate(next(batches), pad_id).items()}
            loss = model(**batch).loss  # mean over labelled tokens
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at step {bar.n}; "
                                    "lower the learning rate (--lr) and train again")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return LoopResult(steps=settings.steps, examples=settings.steps * settings.batch,
                      seconds=time.perf_counter() - started, final_loss=loss_value)
