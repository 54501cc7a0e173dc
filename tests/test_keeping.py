"""What keeps a base's knowledge and teaches a corpus's boundary: the replay set, near misses, the mixture."""

from __future__ import annotations

import json
import re

import pytest
import torch
from sqlalchemy import func, select

from executive.memory import is_unknown
from registry.operations.replay import whole_sentences
from registry.store.schema import ReplaySetRow
from tests.conftest import Memo
from tests.support.models import HARBOR
from training.boundary import REFUSAL, is_refusal, names_in, near_misses
from training.chat import QAPair
from training.qa_files import decode_records
from training.sft import SFTSettings, mixture, rounds_for

PAIRS = [QAPair(r["question"], r["answer"]) for r in map(json.loads, (HARBOR / "qa.jsonl").read_text().splitlines())]
TEXT = "\n".join(p.read_text() for p in sorted(HARBOR.glob("*.md")))


def test_near_misses_swap_every_corpus_name_for_a_look_alike_and_refuse():
    words = set(re.findall(r"[A-Z][a-z]+", TEXT))
    misses = near_misses(PAIRS, TEXT, 20, seed=1)
    assert len(misses) == 20 and all(m.answer == REFUSAL for m in misses)
    originals = {p.question for p in PAIRS}
    for miss in misses:
        assert miss.question not in originals
        assert not names_in(miss.question, words), f"a corpus name survived in {miss.question!r}"
        invented = [w for w in re.findall(r"\b[A-Z][a-z]+", miss.question) if w not in {"In", "What", "Which", "Who"}]
        assert invented and all(w not in words for w in invented)
    assert near_misses(PAIRS, TEXT, 20, seed=1) == misses  # seeded
    assert near_misses([QAPair("What is a noun?", "a word")], TEXT, 5) == []  # no corpus name: nothing to swap


def test_the_refusal_is_what_the_executive_treats_as_unknown():
    assert is_refusal(REFUSAL) and is_unknown(REFUSAL)
    assert not is_refusal("Mirlinmouth") and not is_unknown("1703")


def test_the_mixture_gives_each_part_its_share():
    replay = [QAPair(f"prompt {i}?", f"answer {i}.") for i in range(30)]
    boundary = near_misses(PAIRS, TEXT, 12)
    mixed = mixture(PAIRS, replay, boundary, SFTSettings(replay=0.5, boundary=0.1))
    assert mixed[: len(PAIRS)] == PAIRS
    rest = mixed[len(PAIRS) :]
    assert sum(p in replay for p in rest) == round(46 * 0.5 / 0.4) == 58  # the 30 repeated to fill the share
    assert sum(p in boundary for p in rest) == round(46 * 0.1 / 0.4) == 12
    assert mixture(PAIRS, replay, boundary, SFTSettings()) == PAIRS  # no shares: the corpus alone


def test_a_training_that_sees_more_examples_meets_more_distinct_replay_in_the_same_shares():
    replay = [QAPair(f"prompt {i}?", f"answer {i}.") for i in range(300)]
    boundary = near_misses(PAIRS, TEXT, 60)
    settings = SFTSettings(replay=0.5, boundary=0.1)
    # 960 examples seen, 116 a round (46 + 58 + 12): 8 rounds would fit, the pool has 5 rounds of 58 distinct
    assert rounds_for(46, 300, 960, settings) == 5 and rounds_for(46, 300, 200, settings) == 1
    assert rounds_for(46, 300, None, settings) == 1 and rounds_for(46, 0, 960, settings) == 1
    mixed = mixture(PAIRS, replay, boundary, settings, seen=960)
    assert mixed[: 5 * 46] == PAIRS * 5
    rest = mixed[5 * 46 :]
    drawn = [p for p in rest if p in replay]
    assert len(drawn) == 5 * 58 == len(set(drawn))  # distinct: none repeated
    assert sum(p in boundary for p in rest) == 5 * 12 and len(mixed) == 5 * 116
    assert mixture(PAIRS, replay, boundary, settings, seen=960) == mixed  # seeded


def test_near_misses_beyond_the_questions_come_round_with_other_names():
    misses = near_misses(PAIRS, TEXT, 3 * len(PAIRS), seed=2)
    assert len(misses) == 3 * len(PAIRS) and len({m.question for m in misses}) > 2.5 * len(PAIRS)


@pytest.mark.parametrize("replay, boundary", [(-0.1, 0.0), (1.0, 0.0), (0.6, 0.4)])
def test_shares_must_leave_room_for_the_corpus(replay, boundary):
    with pytest.raises(ValueError, match="shares of the training examples"):
        SFTSettings(replay=replay, boundary=boundary)


def test_replies_cut_at_the_token_limit_keep_whole_sentences():
    assert whole_sentences("The sea is salty. It covers most of the Ear") == "The sea is salty."
    assert whole_sentences("No sentence end here") == "No sentence end here"
    assert whole_sentences("Version 2.5 is out! Next") == "Version 2.5 is out!"


def test_the_replay_set_is_made_once_per_base_and_recorded(tiny_registry):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    reg.import_reflections("harbor", HARBOR / "qa.jsonl")
    settings = SFTSettings(steps=6, batch=8, replay=0.5, boundary=0.1)
    first = reg.train("harbor", settings, progress=False)
    # 240 examples seen, 66 a round (46 + 20 replay): 3 rounds, as many distinct replay pairs as the set has
    second = reg.train("harbor", SFTSettings(steps=30, batch=8, replay=0.3, seed=1), progress=False)
    with reg.db.read() as session:
        assert session.scalar(select(func.count()).select_from(ReplaySetRow)) == 1
        row = session.scalars(select(ReplaySetRow)).one()
    # each task vector names the replay set it drew from
    assert first.training["mixture"] == {
        "corpus": 46,
        "rounds": 1,
        "replay_and_boundary": 58 + 12,
        "replay_set": row.sha256,
    }
    assert second.training["mixture"] == {
        "corpus": 46,
        "rounds": 3,
        "replay_and_boundary": 3 * 20,
        "replay_set": row.sha256,
    }
    plain = reg.train("harbor", SFTSettings(steps=2, batch=8), progress=False)
    assert "replay_set" not in plain.training["mixture"]
    prompts = [line for line in (HARBOR.parent / "general" / "prompts.txt").read_text().splitlines() if line]
    assert 0 < row.pair_count <= len(prompts)
    # gc and verify know the probe and replay sets' blobs: nothing of them is unreferenced or collected
    assert reg.verify().unreferenced == () and reg.gc(dry_run=True, grace_seconds=0).removed == ()


def test_a_base_probed_with_the_bank_replays_its_short_answers_to_the_bank_questions_it_is_not_probed_with(
    tiny_registry, tmp_path
):
    from registry.operations.probes import bank_path
    from registry.operations.replay import SHORT_REQUEST, prompts_path
    from training.evaluate import generate_answers
    from training.probes import read_probes
    from training.sft import load_model

    reg = tiny_registry
    bank = [p.question for p in read_probes(bank_path())]
    # Five bank questions with the tiny base's own replies as their answers: it "knows" them, so the new
    # probe set (the bank and this file) asks them, and the replay set must leave them out.
    model, tokenizer = load_model(reg.base_dir("tiny"))
    replies = generate_answers(model, tokenizer, bank[:40])
    known = [(q, r.strip()) for q, r in zip(bank, replies) if r.strip()][:5]
    assert len(known) == 5
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in known))
    reg.probe_base("tiny", [mine], bank=True)
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    reg.import_reflections("harbor", HARBOR / "qa.jsonl")
    first = reg.train("harbor", SFTSettings(steps=2, batch=8, replay=0.5), progress=False)

    with reg.db.read() as session:
        row = session.scalars(select(ReplaySetRow)).one()
    assert first.training["mixture"]["replay_set"] == row.sha256
    replayed = {r["question"]: r["answer"] for r in decode_records(reg.ws.store.get_bytes(row.sha256))}
    probed = {q for q, _ in known}
    everyday = {line.strip() for line in prompts_path().read_text().splitlines() if line.strip()}
    assert probed <= set(bank) and not probed & replayed.keys()  # never the questions that measure what is kept
    short = replayed.keys() - everyday
    assert short and short <= set(bank) - probed  # the bank's other questions, asked without the request
    assert not any(SHORT_REQUEST.strip() in q for q in replayed)
    assert all("\n" not in replayed[q] for q in short)  # a short answer is one line
    same = reg.train("harbor", SFTSettings(steps=2, batch=8, replay=0.5), progress=False, reuse=True)
    assert same.reused and same.version == first.version  # `memo register` again: the same training

    # A base probed with its own world (the tiny base's default) replays the everyday prompts alone; so
    # does it again once its probe set no longer comes from the bank. The same settings are then another
    # training (another replay set), never the one recorded on the old set.
    reg.probe_base("tiny", [mine], bank=False)
    again = reg.train("harbor", SFTSettings(steps=2, batch=8, replay=0.5), progress=False, reuse=True)
    assert not again.reused and again.version == first.version + 1
    with reg.db.read() as session:
        rows = session.scalars(select(ReplaySetRow).order_by(ReplaySetRow.id)).all()
    assert len(rows) == 2 and again.training["mixture"]["replay_set"] == rows[1].sha256 != row.sha256
    assert reg.train("harbor", SFTSettings(steps=2, batch=8, replay=0.5), progress=False, reuse=True).reused
    assert {r["question"] for r in decode_records(reg.ws.store.get_bytes(rows[1].sha256))} <= everyday


def test_bad_shares_on_the_command_line_are_one_line(with_base: Memo):
    error = with_base("train", "harbor", "--replay", "0.7", "--boundary", "0.4", ok=False).stderr.strip().splitlines()
    assert "shares of the training examples" in error[-1]


def test_the_loss_mean_is_chosen_on_the_command_line_and_recorded(trained):
    from click.testing import CliRunner

    from registry.cli import cli

    def train(*args: str):
        return CliRunner().invoke(cli, ["--home", str(trained.settings.home), "train", "harbor", *args])

    refused = train("--loss-mean", "sentence")
    assert refused.exit_code != 0 and "Invalid value for '--loss-mean'" in refused.output
    done = train("--steps", "2", "--loss-mean", "example", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["training"]["sft"]["loss_mean"] == "example"


def test_healing_mixes_in_the_shares_and_loss_mean_the_members_were_trained_with(tiny_registry):
    from training.retain import RetainSettings

    reg = tiny_registry
    for corpus in ("harbor", "glassworks"):
        reg.add_corpus(corpus, sorted((HARBOR.parent / corpus).glob("*.md")), base="tiny")
        reg.import_reflections(corpus, HARBOR.parent / corpus / "qa.jsonl")
        reg.train(
            corpus,
            SFTSettings(
                steps=6,
                batch=8,
                replay=0.4 if corpus == "harbor" else 0.2,
                boundary=0.1,
                loss_mean="example" if corpus == "glassworks" else "token",
            ),
            progress=False,
        )
    retain = RetainSettings(target=1.0, max_steps=4, check_every=2)
    healed = reg.merge(["harbor", "glassworks"], strategy="ties+heal", retain=retain, progress=False)
    assert healed.parameters["retain"]["replay"] == 0.4 and healed.parameters["retain"]["boundary"] == 0.1
    assert healed.parameters["retain"]["loss_mean"] == "example"  # a member was trained with it
    assert 0 < healed.training_cost.examples <= 4 * retain.batch
    (harbor,) = reg.list_task_vectors("harbor")
    assert healed.training_cost.retain is not None  # it names the replay set it drew from, as a task vector does
    assert healed.training_cost.retain.replay_set == harbor.training["mixture"]["replay_set"]
    explicit = reg.merge(
        ["harbor", "glassworks"],
        strategy="ties+heal",
        retain=RetainSettings(max_steps=2, replay=0.0, loss_mean="token"),
        progress=False,
    )
    assert explicit.parameters["retain"]["replay"] == 0.0 and explicit.id != healed.id
    assert explicit.parameters["retain"]["loss_mean"] == "token"
    assert explicit.training_cost.retain is not None and explicit.training_cost.retain.replay_set is None


def test_a_trained_strategy_replays_as_many_distinct_answers_as_its_step_cap_can_meet(tiny_registry, monkeypatch):
    """As a registration does (rounds): the members' pairs listed once per round, each round beside its
    share of other replayed answers, so the shares hold and the replay is not a few answers repeated."""
    from registry.operations import integration
    from training import retain as retain_module
    from training.retain import RetainSettings

    reg = tiny_registry
    for corpus in ("harbor", "glassworks"):
        reg.add_corpus(corpus, sorted((HARBOR.parent / corpus).glob("*.md")), base="tiny")
        reg.import_reflections(corpus, HARBOR.parent / corpus / "qa.jsonl")
        reg.train(corpus, SFTSettings(steps=4, batch=8, replay=0.2, boundary=0.1), progress=False)
    seen: dict = {}
    mix, train = integration.mixed_in_pairs, retain_module.train

    def mixed(*args, **kwargs):
        seen["mixed"], seen["seen"] = mix(*args, **kwargs), kwargs["seen"]
        seen["own"] = sum(len(pairs) for _, pairs in args[2])  # (corpus id, pairs) of each member
        return seen["mixed"]

    def trained(model, examples, loop, **kwargs):
        seen["examples"] = len(examples)
        return train(model, examples, loop, **kwargs)

    monkeypatch.setattr(integration, "mixed_in_pairs", mixed)
    monkeypatch.setattr(retain_module, "train", trained)
    settings = RetainSettings(target=1.0, max_steps=60, check_every=60, batch=8)
    reg.merge(["harbor", "glassworks"], strategy="retrain", retain=settings, progress=False)
    own, got = seen["own"], seen["mixed"]
    assert seen["seen"] == 60 * 8 and got.rounds > 1
    assert seen["examples"] == got.rounds * own + len(got.pairs)
    replayed = [p for p in got.pairs if p.answer != REFUSAL]
    assert len(set(replayed)) == len(replayed) == round(own * 0.2 / 0.7) * got.rounds  # distinct, in its share


def test_trained_strategies_tune_the_mlp_blocks_alone_when_every_member_was_trained_so(tiny_registry):
    """(A member trained on a share of its MLP neurons, method "sparse", counts as trained so.)"""
    from safetensors.torch import load_file

    from training.retain import RetainSettings

    reg = tiny_registry
    for corpus, method in (("harbor", "mlp"), ("glassworks", "sparse"), ("observatory", "full")):
        reg.add_corpus(corpus, sorted((HARBOR.parent / corpus).glob("*.md")), base="tiny")
        reg.import_reflections(corpus, HARBOR.parent / corpus / "qa.jsonl")
        reg.train(corpus, SFTSettings(method=method, steps=4, batch=8), progress=False)
    pair, retain = ["harbor", "glassworks"], RetainSettings(target=1.0, max_steps=4, check_every=2)
    trained = reg.merge(pair, strategy="retrain", retain=retain, progress=False)  # from the base: it must train
    assert trained.parameters["retain"]["tune"] == "mlp" and trained.training_cost.steps > 0

    def weights(ref: str) -> dict:
        return {k: v for f in reg.model_dir(ref).glob("*.safetensors") for k, v in load_file(f).items()}

    before, after = weights("harbor@v1"), weights(trained.ref)  # harbor's own model: the base outside its MLPs
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".mlp." in name for name in changed)  # attention, norms and embeddings untouched
    mixed = reg.merge([*pair, "observatory"], strategy="retrain", retain=retain, progress=False)
    assert mixed.parameters["retain"]["tune"] == "full"  # a member trained the whole model
    chosen = reg.merge(pair, strategy="retrain", retain=RetainSettings(max_steps=2, tune="full"), progress=False)
    assert chosen.parameters["retain"]["tune"] == "full" and chosen.id != trained.id
    with pytest.raises(ValueError, match="tune one of full, mlp"):
        RetainSettings(tune="lora")  # type: ignore[arg-type]


def test_hallucination_is_the_share_of_unknowns_answered_with_a_fact(monkeypatch):
    import training.evaluate as evaluate
    from training.boundary import hallucination

    replies = {"Who is Ada Vex?": "I don't know.", "Where was Ada Vex born?": "Mirlinmouth", "When?": "I do not know"}
    monkeypatch.setattr(evaluate, "generate_answers", lambda model, tok, qs, **kw: [replies[q] for q in qs])
    rate, said = hallucination(None, None, list(replies))
    assert rate == pytest.approx(1 / 3) and said == list(replies.values())
