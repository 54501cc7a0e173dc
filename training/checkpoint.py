"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the model, the optimizer and scheduler state, the step and
torch's RNG state (batches are a pure function of seed and step), written to a
temporary directory and renamed into place, so a killed run resumes from its
last complete checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from osutil.partial import move_into_place

META = "checkpoint.json"


def save_checkpoint(directory: Path, *, step: int, fingerprint: str, model, optimizer, scheduler) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) tensors
        opt = optimizer.state_dict()
        tensors = {f"{idx}.{key}": value.cpu() for idx, state in opt["state"].items() for key, value in state.items()}
        tensors["torch_rng"] = torch.random.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {
            "step": step,
            "fingerprint": fingerprint,
            "param_groups": opt["param_groups"],
            "scheduler": scheduler.state_dict(),
        }
        (tmp / META).write_text(json.dumps(meta))
        if directory.exists():
            shutil.rmtree(directory)
        move_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(directory: Path, *, fingerprint: str, model, optimizer, scheduler) -> int:
    """Restore a checkpoint written for the same run (``fingerprint``); returns its step (0: none)."""
    meta_path = directory / META
    if not meta_path.is_file():
        return 0
    meta = json.loads(meta_path.read_text())
    if meta["fingerprint"] != fingerprint:
        return 0  # another run's checkpoint: start afresh
    load_model(model, str(directory / "model.safetensors"))
    tensors = load_file(str(directory / "optimizer.safetensors"))
    torch.random.set_rng_state(tensors.pop("torch_rng"))
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return int(meta["step"])
