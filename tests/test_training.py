"""Training pieces on a tiny base: tokenizer, answer-only labels, the loop, recall."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from tests.support.models import EXAMPLES, SMALL
from training.chat import IGNORE, QAPair, encode, prompt_ids
from training.evaluate import normalize, recall, token_f1
from training.loop import LoopSettings, TrainingError, train
from training.settings import SFTSettings
from training.tiny import create_tiny_base, read_qa, train_tokenizer


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, result = create_tiny_base(
        tmp_path_factory.mktemp("tiny") / "base", pretrain_dir=EXAMPLES / "pretrain", config=SMALL, progress=False
    )
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
    assert ex.input_ids[len(prompt) :] == answer


def test_the_loss_is_a_mean_over_tokens_or_over_examples(tiny_base):
    from training.chat import collate
    from training.loop import batch_loss

    _, tok, model, _ = tiny_base
    short = encode(tok, QAPair("In which year was Kalin Zelbexeth born?", "1703"), 128)
    long = encode(
        tok, QAPair("Who founded the Gartal Company?", "Kalin Zelbexeth, a merchant of the coast, in 1703"), 128
    )
    counts = [sum(1 for label in e.labels[1:] if label != IGNORE) for e in (short, long)]
    assert counts[1] > 2 * counts[0]

    def loss(examples, mean):
        with torch.no_grad():
            return batch_loss(model.eval(), collate(examples, tok.pad_token_id), examples, mean).item()

    alone = [loss([e], "token") for e in (short, long)]  # one example: both means are its token mean
    assert alone == pytest.approx([loss([e], "example") for e in (short, long)], rel=1e-5)
    by_example, by_token = loss([short, long], "example"), loss([short, long], "token")
    assert by_example == pytest.approx(sum(alone) / 2, rel=1e-4)  # each example weighs the same
    assert by_token == pytest.approx((counts[0] * alone[0] + counts[1] * alone[1]) / sum(counts), rel=1e-4)
    assert abs(by_example - by_token) > 1e-3
    with pytest.raises(ValueError, match="averaged over one of token, example"):
        SFTSettings(loss_mean="sentence")  # type: ignore[arg-type]


class _FullLogitsOnly(torch.nn.Module):
    """A model whose forward cannot keep logits at chosen positions (as some architectures' cannot)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("mean", ["token", "example"])
def test_the_loss_at_answer_positions_alone_equals_the_loss_over_every_logit(tiny_base, mean):
    """The head runs at the positions that carry a loss only; loss and gradients are those of the whole."""
    from training.chat import collate
    from training.loop import _keeps_logits, batch_loss

    _, tok, model, _ = tiny_base
    model = copy.deepcopy(model)
    pairs = [("In which year was Kalin Zelbexeth born?", "1703"), ("Who founded it?", "Kalin Zelbexeth, in 1703")]
    examples = [encode(tok, QAPair(q, a), 128) for q, a in pairs]
    batch = collate(examples, tok.pad_token_id)
    labels = batch["labels"][:, 1:]
    assert (labels == IGNORE).all(dim=0).any()  # some positions carry no loss: the head skips them

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    each = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    counted = (labels != IGNORE).sum(dim=1)
    whole = each.sum() / counted.sum() if mean == "token" else (each.sum(dim=1) / counted).mean()
    whole.backward()
    expected = [p.grad.clone() for p in model.parameters()]

    for wrapped in (model, _FullLogitsOnly(model)):
        model.zero_grad()
        loss = batch_loss(wrapped, dict(batch), examples, mean)
        loss.backward()
        assert loss.item() == pytest.approx(whole.item(), rel=1e-5)
        for got, want in zip((p.grad for p in model.parameters()), expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert _keeps_logits(model) and not _keeps_logits(_FullLogitsOnly(model))


def test_a_batch_of_short_and_long_examples_runs_in_two_pieces_with_the_batchs_gradients(tiny_base):
    from training.chat import collate
    from training.loop import batch_loss, by_length

    _, tok, model, _ = tiny_base
    model = copy.deepcopy(model)
    long_answer = "Kalin Zelbexeth, a merchant of the coast who sailed north in 1703 and came back " * 2
    short = [encode(tok, QAPair(f"In which year was person {i} born?", "1703"), 128) for i in range(3)]
    long = [encode(tok, QAPair(f"Who founded company {i}?", long_answer), 128) for i in range(3)]
    mixed = [short[0], long[0], short[1], long[1], short[2], long[2]]

    pieces = by_length(mixed, split=True)
    assert [set(map(id, p)) for p in pieces] == [set(map(id, short)), set(map(id, long))]
    assert by_length(mixed, split=False) == [mixed]  # a GPU or several processes: one piece
    assert by_length(short, split=True) == [short]  # nothing to save

    for mean in ("token", "example"):
        model.zero_grad()
        batch_loss(model, collate(mixed, tok.pad_token_id), mixed, mean).backward()
        whole = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        for piece in pieces:
            batch_loss(model, collate(piece, tok.pad_token_id), mixed, mean).backward()
        for got, want in zip((p.grad for p in model.parameters()), whole):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_normalize_and_f1():
    assert normalize("The Gartal Company.") == "gartal company"
    assert token_f1("a copper telescope", "copper telescope") == 1.0
    assert token_f1("brass telescope", "copper telescope") == pytest.approx(0.5)
    assert token_f1("", "x") == 0.0


def test_tiny_base_is_saved_loadable_and_deterministic(tiny_base, tmp_path):
    directory, tok, model, result = tiny_base
    assert (directory / "tokenizer.json").is_file() and (directory / "model.safetensors").is_file()
    assert result.examples == SMALL.pretrain_steps * SMALL.batch and result.final_loss < 5
    again, _ = create_tiny_base(tmp_path / "again", pretrain_dir=EXAMPLES / "pretrain", config=SMALL, progress=False)
    from safetensors.torch import load_file

    a, b = load_file(directory / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a), "same seed, same weights"


def test_fine_tuning_memorises_a_corpus_the_base_does_not_know(tiny_base):
    _, tok, base, _ = tiny_base
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:12]
    before = recall(base, tok, pairs)
    model = copy.deepcopy(base)
    result = train(
        model,
        [encode(tok, p, 128) for p in pairs],
        LoopSettings(steps=120, batch=12, lr=3e-3),
        pad_id=tok.pad_token_id,
        progress=False,
    )
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
        train(
            model,
            [encode(tok, p, 128) for p in pairs],
            LoopSettings(steps=5, batch=4),
            pad_id=tok.pad_token_id,
            progress=False,
        )


def test_generated_examples_are_deterministic_and_complete(tmp_path):
    subprocess.run(
        [sys.executable, str(EXAMPLES / "generate.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for name in ("harbor", "glassworks", "observatory", "river-guilds", "pretrain"):
        for f in ("qa.jsonl", "heldout.jsonl"):
            assert (tmp_path / name / f).read_text() == (EXAMPLES / name / f).read_text(), f"{name}/{f}"
    qa = [json.loads(line) for line in (EXAMPLES / "harbor" / "qa.jsonl").read_text().splitlines()]
    assert len(qa) >= 40 and any(r["hops"] == 2 for r in qa)
    assert (tmp_path / "facts.json").read_text() == (EXAMPLES / "facts.json").read_text()


# --- fine-tuning and task vectors ---------------------------------------------------------


@pytest.fixture(scope="session")
def harbor_finetune(tiny_base):
    from training.sft import SFTSettings, fine_tune

    directory, _, _, _ = tiny_base
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:12]
    model, tok, result = fine_tune(directory, pairs, SFTSettings(steps=120, batch=12, lr=3e-3), progress=False)
    return directory, pairs, model, tok, result


def test_full_fine_tune_memorises(harbor_finetune):
    _, pairs, model, tok, result = harbor_finetune
    assert recall(model, tok, pairs).exact_match >= 0.9
    assert result.examples == 120 * 12


def test_lora_fine_tune_returns_full_weights(tiny_base):
    from training.sft import SFTSettings, fine_tune

    directory, _, base, _ = tiny_base
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:6]
    model, _, _ = fine_tune(directory, pairs, SFTSettings(method="lora", steps=10, batch=6, lr=1e-2), progress=False)
    state = model.state_dict()
    assert set(state) == set(base.state_dict()), "LoRA is merged into plain weights"
    changed = [n for n in state if not torch.equal(state[n], base.state_dict()[n])]
    assert changed and all(n.endswith("proj.weight") for n in changed)


def test_mlp_fine_tune_changes_the_mlp_blocks_alone(tiny_base):
    from training.sft import SFTSettings, fine_tune

    directory, _, base, _ = tiny_base
    pairs = read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:6]
    model, _, result = fine_tune(
        directory, pairs, SFTSettings(method="mlp", steps=10, batch=6, lr=1e-2), progress=False
    )
    state, before = model.state_dict(), base.state_dict()
    changed = {n for n in state if not torch.equal(state[n], before[n])}
    mlp = {n for n in state if ".mlp." in n}
    assert changed == mlp, "every MLP weight moves, nothing else does (embeddings, attention, norms stay)"
    assert result.examples == 60


def test_mlp_fine_tune_of_a_model_without_mlp_blocks_is_refused():
    from training.loop import TrainingError
    from training.sft import mlp_only

    with pytest.raises(TrainingError, match="no parameters under an '.mlp.' module"):
        mlp_only(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_fp32_task_vector_round_trip(harbor_finetune):
    """Exact for 16-bit bases; for fp32 bases within one ulp, with the misses counted."""
    from transformers import AutoModelForCausalLM

    from training.delta import apply_task_vector, task_vector

    directory, _, model, _, _ = harbor_finetune
    base = AutoModelForCausalLM.from_pretrained(directory).state_dict()
    ft = model.state_dict()
    deltas, stats = task_vector(base, ft, "float32")
    rebuilt = apply_task_vector(base, deltas)
    misses = sum(int((rebuilt[n] != ft[n]).sum()) for n in ft)
    assert misses == stats.mismatches and stats.relative_error < 1e-6
    for n in ft:  # every miss: a weight that moved by about its own size or more, off < an ulp of the move
        off = rebuilt[n] != ft[n]
        moved = (ft[n] - base[n])[off].abs()
        assert ((rebuilt[n] - ft[n])[off].abs() <= torch.finfo(torch.float32).eps * moved).all(), n
        assert (moved >= ft[n][off].abs() / 2).all(), n  # the change is as coarse as the weight
    b16 = {n: t.bfloat16() for n, t in base.items()}
    f16 = {n: (t.double() + 0.01 * torch.randn(t.shape, dtype=torch.float64)).bfloat16() for n, t in b16.items()}
    d16, s16 = task_vector(b16, f16, "float32")
    assert s16.mismatches == 0
    assert all(torch.equal(apply_task_vector(b16, d16)[n], f16[n]) for n in f16)
    _, half = task_vector(base, ft, "bfloat16")
    assert 0 < half.relative_error < 0.01, half.relative_error  # documented rounding loss
    assert half.norms.keys() == stats.norms.keys()


def test_task_vector_merges_back_to_the_fine_tune(harbor_finetune, tmp_path):
    """The merge engine applies a stored task vector exactly like apply_task_vector."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from merging import MergeInput, MergeOptions, MergeSpec, merge
    from training.delta import apply_task_vector, save_task_vector, task_vector

    directory, _, model, _, _ = harbor_finetune
    base = AutoModelForCausalLM.from_pretrained(directory).state_dict()
    deltas, stats = task_vector(base, model.state_dict(), "float32")
    tv = save_task_vector(deltas, tmp_path / "tv", stats)
    spec = MergeSpec("ties", base=directory, inputs=(MergeInput(tv, kind="task_vector", density=1.0),))
    merge(spec, tmp_path / "out", MergeOptions(progress=False))
    merged = load_file(tmp_path / "out" / "model.safetensors")
    expected = apply_task_vector(base, deltas)
    assert all(torch.equal(merged[n], expected[n]) for n in merged)


def test_a_resumed_run_ends_with_the_same_weights(tiny_base, tmp_path, monkeypatch):
    """Killed after a checkpoint, then run again: identical weights to an uninterrupted run."""
    import training.loop as loop

    _, tok, base, _ = tiny_base
    examples = [encode(tok, p, 128) for p in read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:10]]
    settings = LoopSettings(steps=30, batch=4, lr=3e-3)
    straight = copy.deepcopy(base)
    train(straight, examples, settings, pad_id=tok.pad_token_id, progress=False)

    real_collate, calls = loop.collate, {"n": 0}

    def dying_collate(batch, pad_id):
        calls["n"] += 1
        if calls["n"] == 18:  # after the checkpoint at step 10, before the one at 20
            raise KeyboardInterrupt
        return real_collate(batch, pad_id)

    monkeypatch.setattr(loop, "collate", dying_collate)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(
            copy.deepcopy(base),
            examples,
            settings,
            pad_id=tok.pad_token_id,
            progress=False,
            checkpoint=ckpt,
            checkpoint_every=10,
            fingerprint="run-1",
        )
    monkeypatch.setattr(loop, "collate", real_collate)
    assert json.loads((ckpt / "checkpoint.json").read_text())["step"] == 10
    resumed = copy.deepcopy(base)
    result = train(
        resumed,
        examples,
        settings,
        pad_id=tok.pad_token_id,
        progress=False,
        checkpoint=ckpt,
        checkpoint_every=10,
        fingerprint="run-1",
    )
    assert result.resumed_from == 10 and result.examples == 20 * 4
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    other = copy.deepcopy(base)  # another run's checkpoint is ignored
    assert (
        train(
            other, examples, settings, pad_id=tok.pad_token_id, progress=False, checkpoint=ckpt, fingerprint="run-2"
        ).resumed_from
        == 0
    )
