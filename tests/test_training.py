"""Training pieces on a tiny base: tokenizer, answer-only labels, the loop, recall."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.chat import IGNORE, QAPair, encode, prompt_ids
from training.evaluate import normalize, recall, token_f1
from training.loop import LoopSettings, TrainingError, train
from training.tiny import TinyConfig, create_tiny_base, read_qa, train_tokenizer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = TinyConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=172, vocab=512,
                   pretrain_steps=60, batch=32, lr=2e-3)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, result = create_tiny_base(tmp_path_factory.mktemp("tiny") / "base",
                                         pretrain_dir=EXAMPLES / "pretrain", config=SMALL, progress=False)
    return directory, AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory), result


def test_tokenizer_has_chat_template_and_special_tokens():
    tok = train_tokenizer(["Who founded the Gartal Company? Kalin Zelbexeth"] * 20, 300)
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|end|>"
    ids = prompt_ids(tok, "Who?")
    assert tok.decode(ids) == "<|user|>\nWho?<|end|>\n<|assistant|>\n"


def test_loss_is_on_the_answer_only(tiny_base):
    _, tok, _, _ = tiny_base
    ex = encode(tok, QAPair("In which year was Kalin Zelbexeth born?", "1703"), 128)
    prompt = prompt_ids(tok, "In which year was Kalin Zelbexeth born?")
    assert ex.labels[: len(prompt)] == [IGNORE] * len(prompt)
    answer = [t for t in ex.labels if t != IGNORE]
    assert tok.decode(answer) == "1703<|end|>\n"
    assert ex.input_ids[len(prompt):] == answer


def test_normalize_and_f1():
    assert normalize("The Gartal Company.") == "gartal company"
    assert token_f1("a copper telescope", "copper telescope") == 1.0
    assert token_f1("brass telescope", "copper telescope") == pytest.approx(0.5)
    assert token_f1("", "x") == 0.0


def test_tiny_base_is_saved_loadable_and_deterministic(tiny_base, tmp_path):
    directory, tok, model, result = tiny_base
    assert (directory / "tokenizer.json").is_file() and (directory / "model.safetensors").is_file()
    assert result.examples == SMALL.pretrain_steps * SMALL.batch and result.final_loss < 5
    again, _ = create_tiny_base(tmp_path / "again", pretrain_dir=EXAMPLES / "pretrain", config=SMALL,
                                progress=False)
    from safetensors.torch import load_file

    a, b = load_file(directory / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a), "same seed, same weights"


def test_fine_tuning_memorises_a_corpus_the_base_does_not_know(tiny_base):
    _, tok, base, _ = tiny_base
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:12]
    before = recall(base, tok, pairs)
    model = copy.deepcopy(base)
    result = train(model, [encode(tok, p, 128) for p in pairs],
                   LoopSettings(steps=120, batch=12, lr=3e-3), pad_id=tok.pad_token_id, progress=False)
    after = recall(model, tok, pairs)
    assert before.exact_match <= 0.25, before.predictions
    assert after.exact_match >= 0.9, list(zip([p.answer for p in pairs], after.predictions))
    assert result.examples == 120 * 12


def test_nan_loss_stops_training(tiny_base):
    _, tok, base, _ = tiny_base
    model = copy.deepcopy(base)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:4]
    with pytest.raises(TrainingError, match="loss became nan at step 0; lower the learning rate"):
        train(model, [encode(tok, p, 128) for p in pairs], LoopSettings(steps=5, batch=4),
              pad_id=tok.pad_token_id, progress=False)


def test_generated_examples_are_deterministic_and_complete(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLES / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("harbor", "glassworks", "observatory", "river-guilds", "pretrain"):
        for f in ("qa.jsonl", "heldout.jsonl"):
            assert (tmp_path / name / f).read_text() == (EXAMPLES / name / f).read_text(), f"{name}/{f}"
    qa = [json.loads(line) for line in (EXAMPLES / "harbor" / "qa.jsonl").read_text().splitlines()]
    assert len(qa) >= 40 and any(r["hops"] == 2 for r in qa)
    assert (tmp_path / "facts.json").read_text() == (EXAMPLES / "facts.json").read_text()
