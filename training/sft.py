"""Memory fine-tuning: a base model directory + question-answer pairs -> fine-tuned weights.

Full fine-tuning (MeMo's best), the MLP blocks or a share of their neurons
alone (:mod:`training.sparse`), or LoRA (peft; merged into full weights so
that a task vector can be taken either way), loss on answer tokens only,
through the base's chat template. Models load from safetensors only, never
with ``trust_remote_code``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.chat import QAPair, encode
from training.loop import LoopSettings, TrainingError, train
from training.settings import FULL_LR, LORA_LR, METHODS, SFTSettings, Shares  # noqa: F401 - the settings live there
from training.sparse import choose_neurons, train_only

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_tokenizer(directory: Path):
    """The directory's tokenizer, padding with its end token where it names no pad token."""
    from transformers import AutoTokenizer  # seconds of start-up: only when a model loads

    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(directory: Path, device: str | torch.device = "cpu"):
    from transformers import AutoModelForCausalLM  # seconds of start-up: only when a model loads
    from transformers.utils import logging as hf_logging  # (with the line above)

    hf_logging.disable_progress_bar()  # memo draws its own progress; a bar per model load is noise
    tokenizer = load_tokenizer(directory)
    model = AutoModelForCausalLM.from_pretrained(
        directory, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
    )
    return model.to(device), tokenizer  # type: ignore[arg-type]  # transformers wraps Module.to untyped


def fine_tune(
    base_dir: Path,
    pairs: list[QAPair],
    settings: SFTSettings = SFTSettings(),
    *,
    corpus: Sequence[QAPair] = (),
    everyday: Sequence[str] = (),
    device: str | torch.device = "cpu",
    progress: bool = True,
    checkpoint: Path | None = None,
    fingerprint: str = "",
):
    """Fine-tune a copy of the base; returns (model with full fine-tuned weights, tokenizer, result).

    With ``checkpoint``, progress is saved as it goes and a run with the same
    ``fingerprint`` resumes where a killed one stopped. Method "sparse" chooses the neurons it trains on
    the ``corpus``'s own pairs (default: all of ``pairs``) against ``everyday`` prompts.
    """
    model, tokenizer = load_model(base_dir, device)
    examples = [encode(tokenizer, p, settings.max_length) for p in pairs]
    loop = LoopSettings(
        steps=settings.steps,
        batch=settings.batch,
        lr=settings.learning_rate,
        seed=settings.seed,
        loss_mean=settings.loss_mean,
        # decay would move the weights sparse training leaves alone (their gradient is masked, not None)
        weight_decay=0.0 if settings.method == "sparse" else LoopSettings.weight_decay,
    )
    if settings.method == "lora":
        model = _with_lora(model, settings)
    elif settings.method == "mlp":
        mlp_only(model)
    elif settings.method == "sparse":
        chosen = choose_neurons(
            model, tokenizer, corpus or pairs, everyday, settings.neurons, max_length=settings.max_length
        )
        train_only(model, chosen)
    result = train(
        model,
        examples,
        loop,
        pad_id=tokenizer.pad_token_id,
        device=device,
        progress=progress,
        desc=f"{settings.method} fine-tuning",
        checkpoint=checkpoint,
        fingerprint=fingerprint,
    )
    if settings.method == "lora":
        model = model.merge_and_unload()
    return model, tokenizer, result


def share_count(corpus_pairs: int, share: float, settings: Shares) -> int:
    """How many pairs ``share`` of all the examples asks for beside ``corpus_pairs`` (the corpus keeps the rest)."""
    return round(corpus_pairs * share / (1 - settings.replay - settings.boundary))


@dataclass(frozen=True)
class Mixed:
    """What a training mixes in: ``pairs`` beside ``rounds`` copies of the corpora's own pairs, and what
    the replayed ones were drawn from (an identifier for the record, e.g. a replay set's sha256)."""

    rounds: int
    pairs: list[QAPair]
    replay_source: str | None = None

    def around(self, corpus: Sequence[QAPair]) -> list[QAPair]:
        """The whole training list: the corpus's pairs ``rounds`` times, then the mixed-in pairs."""
        return [*corpus] * self.rounds + self.pairs


def rounds_for(corpus_pairs: int, replay_pool: int, seen: int | None, settings: Shares) -> int:
    """How many times a training lists the corpus's pairs, each time beside its share of other replay pairs.

    A training that will see ``seen`` examples meets as many distinct replay pairs as it has room for
    (up to the pool's size), instead of the same few repeated epoch after epoch: replaying the base's
    answers to many prompts keeps much more of what it knew than replaying a few of them often. The
    shares of the whole are the same either way. Without ``seen`` (a training that stops when it is
    done), one round.
    """
    want = share_count(corpus_pairs, settings.replay, settings)
    if seen is None or not want or not replay_pool:
        return 1
    per_round = corpus_pairs + want + share_count(corpus_pairs, settings.boundary, settings)
    return max(1, min(replay_pool // want, seen // per_round))


def mixed_in(
    corpus_pairs: int,
    replay: Sequence[QAPair],
    boundary: Sequence[QAPair],
    settings: Shares,
    *,
    rounds: int = 1,
) -> list[QAPair]:
    """The replay and boundary pairs to train on beside ``rounds`` copies of ``corpus_pairs`` of the
    corpus's, in the settings' shares of the whole (each drawn seeded, distinct while the pool lasts,
    repeated when it has fewer than its share; boundary pairs may fall short)."""
    rng = random.Random(settings.seed)

    def draw(pool: Sequence[QAPair], share: float) -> list[QAPair]:
        want = share_count(corpus_pairs, share, settings) * rounds if pool else 0
        return [pool[i % len(pool)] for i in rng.sample(range(max(want, len(pool))), want)] if want else []

    return [*draw(replay, settings.replay), *draw(boundary, settings.boundary)]


def mixture(
    corpus: Sequence[QAPair],
    replay: Sequence[QAPair],
    boundary: Sequence[QAPair],
    settings: Shares,
    *,
    seen: int | None = None,
) -> list[QAPair]:
    """The corpus's pairs (:func:`rounds_for` times) followed by :func:`mixed_in`'s."""
    rounds = rounds_for(len(corpus), len(replay), seen, settings)
    return Mixed(rounds, mixed_in(len(corpus), replay, boundary, settings, rounds=rounds)).around(corpus)


def mlp_only(model) -> None:
    """Freeze every parameter outside the transformer blocks' MLPs (``*.mlp.*``: Llama, Qwen, Mistral,
    GPT-2 and most decoder models name them so)."""
    trainable = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".mlp." in name)
        trainable += parameter.numel() if ".mlp." in name else 0
    if not trainable:
        raise TrainingError(f"{type(model).__name__} has no parameters under an '.mlp.' module; use method 'full'")


def _with_lora(model, settings: SFTSettings):
    from peft import LoraConfig, get_peft_model  # peft takes seconds to load: only for --method lora

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=[t for t in LORA_TARGETS if t in present],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
