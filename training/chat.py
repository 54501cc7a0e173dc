"""Question-answer pairs as single-turn chats, tokenised with loss on the answer only.

Each pair becomes the model's own chat template applied to ``[user: question,
assistant: answer]``; the label of every prompt token is -100, so the loss
covers the answer (and its end-of-turn token) only, as in MeMo's training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORE = -100

# The tiny base's own template (real bases bring theirs).
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of the prompt up to where the assistant's answer starts."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )


# No token spans more characters than this, so cutting text at ``max_length`` times it before
# tokenising keeps every token that can land in the first ``max_length`` (and a huge record fast).
MAX_CHARS_PER_TOKEN = 16


def clip(text: str, max_length: int) -> str:
    return text[: max_length * MAX_CHARS_PER_TOKEN]


def encode(tokenizer, pair: QAPair, max_length: int) -> Example:
    question, answer = clip(pair.question, max_length), clip(pair.answer, max_length)
    prompt = prompt_ids(tokenizer, question)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        tokenize=True,
        return_dict=False,
    )
    if full[: len(prompt)] != prompt:
        raise ValueError(
            "the chat template renders the prompt differently inside a full chat; "
            "answer-only loss needs a prefix-stable template"
        )
    full = full[:max_length]
    labels = [IGNORE] * min(len(prompt), len(full)) + full[len(prompt) :]
    return Example(input_ids=full, labels=labels)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: (batch, seq) input ids, attention mask and labels."""
    import torch  # the question-answer files and pairs (this module's rest) are read without it

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
