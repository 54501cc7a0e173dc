"""Recall on a question-answer set: batched greedy decoding, exact match and token F1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from osutil.tuning import rebalance
from training.chat import IGNORE, QAPair, clip, collate, encode, prompt_ids
from training.text import normalize, token_f1  # noqa: F401 - re-exported: evaluate.normalize is used widely


@dataclass(frozen=True)
class Recall:
    exact_match: float  # fraction of answers matched exactly (after normalisation)
    f1: float  # mean token F1
    count: int
    predictions: tuple[str, ...]

    def to_json(self) -> dict:
        return {"exact_match": self.exact_match, "f1": self.f1, "count": self.count}


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    *,
    batch: int = 32,
    max_new_tokens: int = 16,
    device: str | torch.device = "cpu",
) -> list[str]:
    """Greedy answers, left-padded batches, stopping at the end-of-turn token."""
    model.to(device).eval()
    pad = tokenizer.pad_token_id
    # A prompt longer than the model's context keeps its end (where the answer starts).
    room = max(1, getattr(model.config, "max_position_embeddings", 2048) - max_new_tokens)
    answers: list[str] = []
    for start in range(0, len(questions), batch):
        rebalance()
        prompts = [prompt_ids(tokenizer, clip(q, room))[-room:] for q in questions[start : start + batch]]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def recall(model, tokenizer, pairs: list[QAPair], **kwargs) -> Recall:
    predictions = generate_answers(model, tokenizer, [p.question for p in pairs], **kwargs)
    em = [normalize(pred) == normalize(p.answer) for pred, p in zip(predictions, pairs)]
    f1 = [token_f1(pred, p.answer) for pred, p in zip(predictions, pairs)]
    n = max(1, len(pairs))
    return Recall(exact_match=sum(em) / n, f1=sum(f1) / n, count=len(pairs), predictions=tuple(predictions))


@torch.no_grad()
def teacher_forced_exact(
    model, tokenizer, pairs: list[QAPair], *, batch: int = 64, max_length: int = 128, device: str | torch.device = "cpu"
) -> float:
    """Fraction of pairs whose whole answer, end-of-turn token included, is the greedy choice at every token.

    One forward pass per batch instead of a decoding loop: the fast stand-in
    for :func:`recall`'s exact match used to decide when training may stop.
    Greedy decoding follows the answer for as long as each of its tokens is
    the greedy choice, so a pair counted here is also an exact match there
    (the converse can fail: exact match forgives case and punctuation).
    """
    model.to(device)
    eos = tokenizer.eos_token_id
    hits = 0
    for start in range(0, len(pairs), batch):
        examples = [encode(tokenizer, p, max_length) for p in pairs[start : start + batch]]
        tensors = {k: v.to(device) for k, v in collate(examples, tokenizer.pad_token_id).items()}
        labels = tensors.pop("labels")[:, 1:]
        guesses = model(**tensors).logits[:, :-1].argmax(-1)
        for row in range(len(examples)):
            answer = (labels[row] != IGNORE).nonzero().flatten()
            ends = (labels[row, answer] == eos).nonzero().flatten()
            if len(ends):  # up to the end-of-turn token: what decoding stops at
                answer = answer[: int(ends[0]) + 1]
            hits += bool(len(answer)) and bool((guesses[row, answer] == labels[row, answer]).all())
    return hits / max(1, len(pairs))
