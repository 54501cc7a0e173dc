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
from pathlib import Path

import torch
from tqdm import tqdm

from training.chat import Example, collate
from training.checkpoint import load_checkpoint, save_checkpoint


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
    resumed_from: int = 0  # step restored from a checkpoint (0: a fresh run)


def _batch(examples: list[Example], size: int, seed: int, step: int) -> list[Example]:
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


def train(model: torch.nn.Module, examples: list[Example], settings: LoopSettings, *, pad_id: int,
          device: torch.device | str = "cpu", progress: bool = True, desc: str = "training",
          checkpoint: Path | None = None, checkpoint_every: int = 50, fingerprint: str = "") -> LoopResult:
    """Train ``model`` in place on ``examples``; raises TrainingError on a non-finite loss.

    With ``checkpoint``, the state is saved every ``checkpoint_every`` steps and
    a run with the same ``fingerprint`` resumes from it, ending with the same
    weights as an uninterrupted run.
    """
    if not examples:
        raise TrainingError("nothing to train on: the example set is empty")
    torch.manual_seed(settings.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, math.ceil(settings.warmup * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    start = 0
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, fingerprint=fingerprint, model=model, optimizer=optimizer,
                                scheduler=schedule)
    started, loss_value = time.perf_counter(), float("nan")
    with tqdm(range(start, settings.steps), desc=desc, disable=not progress, leave=False,
              initial=start, total=settings.steps) as bar:
        for step in bar:
            batch = {k: v.to(device) for k, v in collate(_batch(examples, settings.batch, settings.seed, step),
                                                         pad_id).items()}
            loss = model(**batch).loss  # mean over labelled tokens
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at step {step}; "
                                    "lower the learning rate (--lr) and train again")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < settings.steps:
                save_checkpoint(checkpoint, step=step + 1, fingerprint=fingerprint, model=model,
                                optimizer=optimizer, scheduler=schedule)
    model.eval()
    return LoopResult(steps=settings.steps, examples=(settings.steps - start) * settings.batch,
                      seconds=time.perf_counter() - started, final_loss=loss_value, resumed_from=start)
