"""A base's training defaults: what corpora registered on it are fine-tuned with unless a flag says
otherwise (`memo base defaults`, `memo base show`), each flag still winning."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from registry.cli import cli
from registry.operations.bases import defaults_for_new_base
from registry.operations.probes import BANK, TINY_WORLD
from registry.store.errors import InvalidInput, NotFound
from registry.store.schema import BaseModelRow
from tests.conftest import Memo
from training.probes import Selection
from training.settings import KEEP_KNOWLEDGE, SFTSettings, sft_settings


def test_a_base_that_answers_the_bank_brings_the_knowledge_keeping_defaults_and_others_none():
    knows = Selection(asked=60, answered=30, kept=())
    assert defaults_for_new_base(BANK, knows) == KEEP_KNOWLEDGE
    assert defaults_for_new_base(BANK, Selection(asked=432, answered=3, kept=())) is None  # a model that guesses
    assert defaults_for_new_base(BANK, Selection(asked=432, answered=0, kept=())) is None
    assert defaults_for_new_base(TINY_WORLD, knows) is None  # the tiny base keeps memo's own
    assert sft_settings(KEEP_KNOWLEDGE) == SFTSettings(
        method="mlp", steps=80, replay=0.5, boundary=0.1, loss_mean="example"
    )


def test_the_layers_of_settings_are_checked_field_by_field():
    assert sft_settings({"steps": 80, "method": "mlp"}, {"steps": 3}) == SFTSettings(method="mlp", steps=3)
    assert sft_settings({"method": "lora"}).lr == SFTSettings(method="lora").lr  # the method's own rate
    for bad, says in (
        ({"stepz": 3}, "not fine-tuning settings: stepz"),
        ({"steps": "many"}, "steps cannot be 'many'"),
        ({"steps": 2.5}, "steps cannot be 2.5"),
        ({"steps": 0}, "steps must be 1 or more"),
        ({"replay": True}, "replay cannot be True"),
        ({"method": "all"}, "the method is one of full, mlp, lora"),
        ({"lr": 0}, "learning rate must be above 0"),
    ):
        with pytest.raises(ValueError, match=says):
            sft_settings(bad)
    with pytest.raises(ValueError, match="shares of the training examples"):
        sft_settings({"replay": 0.6}, {"boundary": 0.5})  # each fine alone, not together


def test_base_defaults_are_shown_changed_and_cleared(with_base: Memo):
    memo = with_base
    assert "training defaults │ memo's own" in memo("base", "show", "tiny").output
    shown = json.loads(memo("base", "defaults", "tiny", "--json").output)
    assert shown == {"base": "tiny", "training_defaults": {}, "settings": SFTSettings().to_json()}

    memo("base", "defaults", "tiny", "--steps", "7", "--replay", "0.3")
    changed = json.loads(memo("base", "defaults", "tiny", "--loss-mean", "example", "--json").output)
    assert changed["training_defaults"] == {"steps": 7, "replay": 0.3, "loss_mean": "example"}  # laid over
    assert changed["settings"] == SFTSettings(steps=7, replay=0.3, loss_mean="example").to_json()
    assert (
        json.loads(memo("base", "show", "tiny", "--json").output)["training_defaults"] == changed["training_defaults"]
    )
    assert "steps 7, replay 0.3, loss-mean example" in memo("base", "show", "tiny").output

    # Bad input: one line, nothing changed.
    for args, says in (
        (("--steps", "0"), "steps must be 1 or more"),
        (("--boundary", "0.8"), "shares of the training examples"),  # 0.3 replay + 0.8: fine alone, not together
    ):
        refused = memo("base", "defaults", "tiny", *args, ok=False)
        assert refused.exit_code != 0 and says in refused.output.strip().splitlines()[-1]
    refused = memo("base", "defaults", "nope", "--steps", "3", ok=False)
    assert refused.exit_code != 0 and "unknown base model 'nope'" in refused.output
    assert (
        json.loads(memo("base", "defaults", "tiny", "--json").output)["training_defaults"]
        == changed["training_defaults"]
    )

    cleared = json.loads(memo("base", "defaults", "tiny", "--clear", "--method", "mlp", "--json").output)
    assert cleared["training_defaults"] == {"method": "mlp"}
    assert json.loads(memo("base", "defaults", "tiny", "--clear", "--json").output)["training_defaults"] == {}


def test_training_takes_the_base_defaults_and_every_flag_wins(trained):
    def memo(*args: str):
        result = CliRunner().invoke(cli, ["--home", str(trained.settings.home), *args])
        assert result.exit_code == 0, result.output
        return result

    assert trained.get_base("tiny").training_defaults is None  # the tiny base trains with memo's own
    memo("base", "defaults", "tiny", "--steps", "3", "--batch", "4", "--loss-mean", "example")
    record = json.loads(memo("train", "harbor", "--json").stdout)
    assert record["training"]["sft"] | {"steps": 3, "batch": 4, "loss_mean": "example"} == record["training"]["sft"]
    assert record["training"]["examples"] == 3 * 4
    record = json.loads(memo("train", "harbor", "--steps", "2", "--loss-mean", "token", "--json").stdout)
    assert (record["training"]["sft"]["steps"], record["training"]["sft"]["batch"]) == (2, 4)
    assert record["training"]["sft"]["loss_mean"] == "token" and record["training"]["examples"] == 2 * 4

    # The Python API: settings None is the base's defaults; explicit settings are used as they are.
    assert trained.train("glassworks", progress=False).cost.examples == 3 * 4
    assert trained.train("glassworks", SFTSettings(steps=1, batch=2), progress=False).cost.examples == 2
    assert trained.training_settings("tiny", batch=5) == SFTSettings(steps=3, batch=5, loss_mean="example")
    with pytest.raises(NotFound, match="unknown base model"):
        trained.training_settings("nope")


def test_defaults_that_no_longer_make_sense_are_refused_before_training(trained):
    with trained.db.write() as session:  # e.g. written by hand, or by a memo with other settings
        session.execute(update(BaseModelRow).values(training_defaults={"steps": "many"}))
    before = len(trained.list_task_vectors("harbor"))
    with pytest.raises(InvalidInput, match="steps cannot be 'many'"):
        trained.train("harbor", progress=False)
    assert len(trained.list_task_vectors("harbor")) == before
    assert trained.train("harbor", SFTSettings(steps=1, batch=2), progress=False) is not None
