"""Train a tiny Llama on fixed examples and save the weights (run by the tests, alone or under torchrun)."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from training.chat import Example
from training.distributed import is_main_process
from training.loop import LoopSettings, train


def examples(n: int = 12) -> list[Example]:
    """Examples of different lengths and label counts, so uneven shares are exercised."""
    out = []
    for i in range(n):
        ids = [(7 * i + j) % 120 + 3 for j in range(6 + i % 5)]
        cut = 2 + i % 3
        out.append(Example(input_ids=ids, labels=[-100] * cut + ids[cut:]))
    return out


def main(model_dir: str, out: str, batch: str, loss_mean: str = "token") -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    train(
        model,
        examples(),
        LoopSettings(steps=6, batch=int(batch), lr=1e-2, seed=3, loss_mean=loss_mean),
        pad_id=0,
        device="cpu",
        progress=False,
    )
    if is_main_process():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
