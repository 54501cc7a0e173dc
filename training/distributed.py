"""Devices, and data-parallel training when launched with several processes.

A plain run is one process on one device. Started by ``accelerate launch``
(or ``torchrun``), every process trains on its share of each batch through an
:class:`accelerate.Accelerator` (DDP on GPUs, gloo on CPUs); the main process
alone writes checkpoints and records results. The launchers' contract is the
environment: ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def resolve_device(requested: str = "auto") -> str:
    """``auto``: CUDA when there is a GPU, else the CPU. Under a launcher, each process takes its own GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and world_size() > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for, but torch sees no CUDA GPU")
    return requested


def accelerator(device: str):
    """An Accelerator for a multi-process launch, or None for a plain run."""
    if world_size() <= 1:
        return None
    from accelerate import Accelerator  # only under a multi-process launch (a second to load)

    return Accelerator(cpu=not device.startswith("cuda"))


def wait_for_everyone() -> None:
    """A barrier across the processes of a launch (nothing in a plain run)."""
    if world_size() > 1:
        from accelerate import PartialState  # only under a multi-process launch

        PartialState().wait_for_everyone()
