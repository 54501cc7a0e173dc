"""Tiny base models built on the spot, offline: a BPE tokenizer trained here and a small
Llama-style model briefly pre-trained on a separate fictional world in question/answer form.

Per-corpus fine-tunes then start from a model that already knows the format,
so their task vectors are small and mergeable, as with a real pretrained base.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from training.chat import TINY_CHAT_TEMPLATE, Example, QAPair, encode
from training.loop import LoopResult, LoopSettings, train
from training.qa_files import pairs_of, read_qa_file
from training.settings import TinyConfig

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def train_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE tokenizer with memo's chat special tokens and template."""
    from transformers import PreTrainedTokenizerFast  # transformers loads only when a model is built (start-up)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None, unk_token=None
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def read_qa(path: Path) -> list[QAPair]:
    return pairs_of(read_qa_file(path))


def create_tiny_base(
    directory: Path,
    *,
    pretrain_dir: Path,
    config: TinyConfig = TinyConfig(),
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Path, LoopResult]:
    """Build, pre-train and save a tiny base model directory (tokenizer included)."""
    from transformers import LlamaConfig, LlamaForCausalLM  # transformers loads only when a model is built (start-up)

    pairs = read_qa(pretrain_dir / "qa.jsonl") + read_qa(pretrain_dir / "heldout.jsonl")
    docs = [p.read_text() for p in sorted(pretrain_dir.glob("*.md"))]
    tokenizer = train_tokenizer(docs + [f"{p.question} {p.answer}" for p in pairs], config.vocab)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden,
            intermediate_size=config.intermediate,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.kv_heads,
            max_position_embeddings=config.context,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        )
    )
    # Pre-training sees whole chats (question and answer) and the documents as text.
    examples = [_full_loss(encode(tokenizer, p, config.context)) for p in pairs]
    examples += [_text_example(tokenizer, d, config.context) for d in docs]
    result = train(
        model,
        examples,
        LoopSettings(steps=config.pretrain_steps, batch=config.batch, lr=config.lr, seed=config.seed),
        pad_id=tokenizer.pad_token_id,
        device=device,
        progress=progress,
        desc="pre-training",
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.to("cpu").save_pretrained(directory)  # type: ignore[arg-type]  # transformers wraps Module.to untyped
    tokenizer.save_pretrained(directory)
    (directory / "memo_tiny_base.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "pretrain": {"examples": result.examples, "seconds": result.seconds, "final_loss": result.final_loss},
            },
            indent=2,
        )
    )
    return directory, result


def _full_loss(example: Example) -> Example:
    return Example(example.input_ids, list(example.input_ids))


def _text_example(tokenizer, text: str, context: int) -> Example:
    ids = tokenizer(text)["input_ids"][: context - 1] + [tokenizer.eos_token_id]
    return Example(ids, list(ids))
