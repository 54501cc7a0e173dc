"""Sparse fine-tuning: train only the MLP neurons a corpus uses far more than everyday prompts do.

A neuron of a Llama-style MLP block (Llama, Qwen, Mistral, SmolLM2) is a row of ``gate_proj`` and
``up_proj`` and the matching column of ``down_proj``. Each is scored by its mean absolute activation
(what enters ``down_proj``) over the corpus's question-answer pairs, divided by its mean over everyday
prompts; the top share of every block is trained and every other weight keeps the base's value exactly
(its gradient is masked). Neurons that the rest of the world's questions use are left alone, which keeps
more of a pretrained base's general knowledge than training whole MLP blocks. (It does not make task
vectors merge better: corpora of the same kind choose mostly the same neurons, and even vectors that
share no weight interfere in a sum, since every corpus's questions run through every corpus's neurons.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from training.chat import Example, QAPair, collate, encode, prompt_ids
from training.loop import TrainingError

SCORE_FLOOR = 1e-3  # added to the everyday activation, so a neuron silent on both scores ~0, not 0/0
SCORING_BATCH = 16  # sequences per forward pass while activations are measured


@dataclass(frozen=True)
class Neurons:
    """The trained neurons: one boolean mask per MLP block, over its intermediate width."""

    masks: list[torch.Tensor]


def mlp_blocks(model) -> list[Any]:
    """The model's Llama-style MLP blocks (modules of transformers' own classes), in order; raises
    TrainingError when it has none."""
    blocks = [m for _, m in model.named_modules() if all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj"))]
    if not blocks:
        raise TrainingError(
            f"{type(model).__name__} has no Llama-style MLP blocks (gate_proj, up_proj, down_proj); "
            "use method 'mlp' or 'full'"
        )
    return blocks


def choose_neurons(
    model, tokenizer, corpus: Sequence[QAPair], everyday: Sequence[str], share: float, *, max_length: int = 128
) -> Neurons:
    """The ``share`` of every MLP block's neurons that the corpus uses most against everyday prompts."""
    if not corpus or not everyday:
        raise TrainingError("sparse fine-tuning needs the corpus's pairs and everyday prompts to choose neurons")
    blocks = mlp_blocks(model)
    pad = tokenizer.pad_token_id
    on_corpus = _mean_activations(model, blocks, [encode(tokenizer, p, max_length) for p in corpus], pad)
    prompts = [Example(ids[:max_length], ids[:max_length]) for ids in (prompt_ids(tokenizer, q) for q in everyday)]
    on_everyday = _mean_activations(model, blocks, prompts, pad)
    masks = []
    for corpus_mean, everyday_mean in zip(on_corpus, on_everyday):
        score = corpus_mean / (everyday_mean + SCORE_FLOOR)
        mask = torch.zeros_like(score, dtype=torch.bool)
        mask[torch.topk(score, max(1, round(share * score.numel()))).indices] = True
        masks.append(mask)
    return Neurons(masks)


def train_only(model, neurons: Neurons) -> None:
    """Freeze every parameter outside the MLP blocks, and mask the blocks' gradients to the chosen neurons
    (the loop must not decay weights either, or the others would drift from the base's values)."""
    blocks = mlp_blocks(model)
    if len(blocks) != len(neurons.masks):
        raise TrainingError(f"{len(neurons.masks)} neuron masks for {len(blocks)} MLP blocks")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block, mask in zip(blocks, neurons.masks):
        rows = mask.to(block.gate_proj.weight.device, block.gate_proj.weight.dtype)
        for projection, masked in (
            (block.gate_proj, rows[:, None]),
            (block.up_proj, rows[:, None]),
            (block.down_proj, rows[None, :]),
        ):
            projection.weight.requires_grad_(True)
            projection.weight.register_hook(lambda grad, m=masked: grad * m)


def _mean_activations(model, blocks, examples: list[Example], pad: int) -> list[torch.Tensor]:
    """Per block, the mean absolute input of ``down_proj`` over the examples' (unpadded) tokens."""
    device = next(model.parameters()).device
    sums = [torch.zeros(b.down_proj.in_features, device=device) for b in blocks]
    tokens = torch.zeros((), device=device)
    live: list[torch.Tensor] = []  # the batch's attention mask, read by the hooks

    def hook(i: int):
        def add(_module, inputs) -> None:
            sums[i] += (inputs[0].detach().abs() * live[0][..., None]).sum(dim=(0, 1))

        return add

    handles = [b.down_proj.register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), SCORING_BATCH):
                batch = collate(examples[start : start + SCORING_BATCH], pad)
                live[:] = [batch["attention_mask"].to(device, torch.float32)]
                tokens += live[0].sum()
                model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [s.cpu() / tokens.clamp(min=1).cpu() for s in sums]
