"""Sparse fine-tuning (method "sparse"): a share of each MLP block's neurons, those the corpus uses far
more than everyday prompts do, is trained; every other weight keeps the base's value exactly."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from registry.cli import cli
from registry.operations.replay import everyday_prompts
from tests.support.models import EXAMPLES, SMALL
from training.loop import TrainingError
from training.settings import SPARSE_LR, SFTSettings, sft_settings
from training.sft import fine_tune, load_model
from training.sparse import SCORE_FLOOR, Neurons, _mean_activations, choose_neurons, mlp_blocks, train_only
from training.tiny import create_tiny_base, read_qa

EVERYDAY = ["What is the capital of France?", "How many days are in a week?", "Name a primary colour."] * 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    directory, _ = create_tiny_base(
        tmp_path_factory.mktemp("tiny") / "base", pretrain_dir=EXAMPLES / "pretrain", config=SMALL, progress=False
    )
    return directory, read_qa(EXAMPLES / "harbor" / "qa.jsonl")[:12]


def _rows_changed(before: torch.Tensor, after: torch.Tensor, dim: int) -> torch.Tensor:
    """Which rows (dim 1: which columns) of a weight moved at all."""
    return (before != after).any(dim=dim)


def test_only_the_chosen_neurons_move_and_every_other_weight_stays_the_base_s_exactly(tiny):
    directory, pairs = tiny
    settings = SFTSettings(method="sparse", neurons=0.25, steps=8, batch=6)
    model, tokenizer, result = fine_tune(directory, pairs, settings, everyday=EVERYDAY, progress=False)
    base, _ = load_model(directory)
    chosen = choose_neurons(base, tokenizer, pairs, EVERYDAY, 0.25)
    after, before = model.state_dict(), base.state_dict()
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed and all(".mlp." in n and n.endswith("proj.weight") for n in changed)  # no decay elsewhere
    for i, mask in enumerate(chosen.masks):
        prefix = f"model.layers.{i}.mlp."
        assert mask.sum() == round(0.25 * SMALL.intermediate)
        for name, dim in (("gate_proj", 1), ("up_proj", 1)):
            moved = _rows_changed(before[prefix + name + ".weight"], after[prefix + name + ".weight"], dim)
            assert not moved[~mask].any() and moved[mask].any()
        moved = _rows_changed(before[prefix + "down_proj.weight"], after[prefix + "down_proj.weight"], 0)
        assert not moved[~mask].any() and moved[mask].any()
    assert result.examples == 48 and settings.learning_rate == SPARSE_LR


def test_the_chosen_neurons_are_those_the_corpus_uses_most_against_everyday_prompts(tiny):
    directory, pairs = tiny
    model, tokenizer = load_model(directory)
    chosen = choose_neurons(model, tokenizer, pairs, EVERYDAY, 0.1)
    assert choose_neurons(model, tokenizer, pairs, EVERYDAY, 0.1).masks[0].equal(chosen.masks[0])  # deterministic
    from training.chat import Example, encode, prompt_ids

    blocks = mlp_blocks(model)
    corpus = _mean_activations(model, blocks, [encode(tokenizer, p, 128) for p in pairs], tokenizer.pad_token_id)
    everyday = [Example(ids, ids) for ids in (prompt_ids(tokenizer, q) for q in EVERYDAY)]
    general = _mean_activations(model, blocks, everyday, tokenizer.pad_token_id)
    for mask, c, g in zip(chosen.masks, corpus, general):
        score = c / (g + SCORE_FLOOR)
        assert score[mask].min() >= score[~mask].max()
    # The same pairs one at a time (no padding) give the same means: padded tokens are not counted.
    one_by_one = [_mean_activations(model, blocks, [encode(tokenizer, p, 128)], 0) for p in pairs[:3]]
    together = _mean_activations(model, blocks, [encode(tokenizer, p, 128) for p in pairs[:3]], 0)
    lengths = torch.tensor([len(encode(tokenizer, p, 128).input_ids) for p in pairs[:3]], dtype=torch.float32)
    weighted = sum(m[0] * n for m, n in zip(one_by_one, lengths)) / lengths.sum()
    assert torch.allclose(weighted, together[0], atol=1e-5)
    width = SMALL.intermediate
    assert [(int(m.sum()), m.numel()) for m in chosen.masks] == [(round(0.1 * width), width)] * 2


def test_sparse_training_refuses_what_it_cannot_do(tiny):
    directory, pairs = tiny
    model, tokenizer = load_model(directory)
    with pytest.raises(TrainingError, match="no Llama-style MLP blocks"):
        mlp_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(TrainingError, match="needs the corpus's pairs and everyday prompts"):
        choose_neurons(model, tokenizer, pairs, [], 0.1)
    with pytest.raises(TrainingError, match="needs the corpus's pairs and everyday prompts"):
        fine_tune(directory, pairs, SFTSettings(method="sparse", steps=1), progress=False)
    with pytest.raises(TrainingError, match="1 neuron masks for 2 MLP blocks"):
        train_only(model, Neurons([torch.ones(SMALL.intermediate, dtype=torch.bool)]))


def test_the_share_of_neurons_is_a_setting_recorded_with_the_sparse_method_alone():
    assert SFTSettings(method="sparse").lr == SPARSE_LR
    assert "neurons" not in SFTSettings(method="mlp").to_json()  # the other methods' records are as they were
    assert SFTSettings(method="sparse", neurons=0.2).to_json()["neurons"] == 0.2
    assert sft_settings({"method": "sparse"}, {"neurons": 0.05}) == SFTSettings(method="sparse", neurons=0.05)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="share of each MLP block's neurons trained"):
            SFTSettings(method="sparse", neurons=bad)
    with pytest.raises(ValueError, match="neurons cannot be 'many'"):
        sft_settings({"neurons": "many"})


def test_memo_register_trains_sparse_and_records_it(tiny_registry, tmp_path):
    home = tiny_registry.settings.home
    harbor = EXAMPLES / "harbor"

    def memo(*args: str):
        return CliRunner().invoke(cli, ["--home", str(home), *map(str, args)])

    refused = memo("train", "harbor", "--method", "sparse", "--neurons", "0")
    assert refused.exit_code != 0 and "above 0 and at most 1" in refused.output.strip().splitlines()[-1]
    args = ["register", "harbor", *sorted(harbor.glob("*.md")), "--qa", harbor / "qa.jsonl", "--base", "tiny"]
    done = memo(*args, "--method", "sparse", "--neurons", "0.3", "--steps", "4", "--batch", "8", "--json")
    assert done.exit_code == 0, done.output
    # A share of neurons that the method would not use is refused, given with another method or laid over
    # a base whose defaults train otherwise (the tiny base's: full fine-tuning); nothing is trained or stored.
    refused = memo("train", "harbor", "--method", "mlp", "--neurons", "0.2")
    assert refused.exit_code != 0 and "--neurons goes with --method sparse, not --method mlp" in refused.output
    refused = memo("train", "harbor", "--neurons", "0.2", "--steps", "4")
    assert refused.exit_code != 0 and "--neurons goes with --method sparse, not --method full" in refused.output
    refused = memo("base", "defaults", "tiny", "--neurons", "0.2")
    assert refused.exit_code != 0 and "--neurons goes with --method sparse, not --method full" in refused.output
    assert len(tiny_registry.list_task_vectors("harbor")) == 1 and not tiny_registry.get_base("tiny").training_defaults
    record = json.loads(done.stdout)
    assert record["method"] == "sparse"
    assert record["training"]["sft"]["neurons"] == 0.3 and record["training"]["sft"]["lr"] == SPARSE_LR

    def weights(directory) -> dict[str, torch.Tensor]:
        return {n: t for f in sorted(directory.glob("*.safetensors")) for n, t in load_file(f).items()}

    before, after = weights(tiny_registry.base_dir("tiny")), weights(tiny_registry.model_dir("harbor@v1"))
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(".mlp." in n for n in moved)
    gate = "model.layers.0.mlp.gate_proj.weight"
    assert int(_rows_changed(before[gate], after[gate], 1).sum()) == round(0.3 * SMALL.intermediate)
    assert everyday_prompts()[0]  # the prompts scored against are memo's general prompts
