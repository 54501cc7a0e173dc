"""General knowledge kept: a base's probe set, the figure on every task vector and merge, the channel's gate."""

from __future__ import annotations

import json

import pytest

from registry.store.errors import GateRefused, InvalidInput
from tests.conftest import Memo
from tests.support.models import EXAMPLES
from training.probes import Probe, read_probes, select_known
from training.qa_files import QAFileError, decode_records
from training.sft import load_model


def test_a_reply_counts_when_the_answer_or_an_alias_is_in_it_as_words():
    week = Probe("How many days are in a week?", "7", ("seven",))
    assert week.answered_by("A week has seven days.") and week.answered_by("7")
    assert not week.answered_by("A week has 17 days.") and not week.answered_by("")
    gold = Probe("What is the chemical symbol for gold?", "Au")
    assert gold.answered_by("The chemical symbol for gold is Au.")
    assert not gold.answered_by("Because it is gold")  # "au" inside a word is not the answer


def test_the_bank_is_hundreds_of_distinct_answerable_questions():
    bank = read_probes(EXAMPLES / "general" / "questions.jsonl")
    assert len(bank) >= 400 and len({p.question for p in bank}) == len(bank)
    assert all(p.answered_by(p.answer) for p in bank)
    assert not any(p.answered_by("I don't know.") for p in bank)


def test_aliases_must_be_a_list_of_strings(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?", "answer": "a", "aliases": "b"}) + "\n")
    with pytest.raises(QAFileError, match="aliases"):
        read_probes(bad)


class _Oracle:
    """Stands in for a model in select_known: answers the questions it is told it knows."""

    def __init__(self, known: set[str]) -> None:
        self.known = known


def test_selection_stops_asking_once_the_limit_is_known(monkeypatch):
    import training.evaluate as evaluate

    asked: list[str] = []

    def fake_generate(model, tokenizer, questions, **kwargs):
        asked.extend(questions)
        return [q.split(":")[1] if q in model.known else "no idea" for q in questions]

    monkeypatch.setattr(evaluate, "generate_answers", fake_generate)
    bank = [Probe(f"q{i}:a{i}", f"a{i}") for i in range(200)]
    oracle = _Oracle({p.question for p in bank[::2]})  # knows half
    chosen = select_known(oracle, None, bank, limit=20, batch=16)
    assert chosen.asked == len(asked) < 80 and chosen.answered >= 20 and len(chosen.kept) == 20
    assert all(p.question in oracle.known for p in chosen.kept)
    assert [p for p in bank if p in chosen.kept] == list(chosen.kept)  # in the bank's order
    everything = select_known(oracle, None, bank, limit=500)
    assert everything.asked == 200 and everything.answered == 100 == len(everything.kept)


def test_the_tiny_base_is_probed_with_its_own_world(tiny_registry):
    base = tiny_registry.get_base("tiny")
    probes = base.probes
    assert probes is not None and probes.source == "the tiny base's pre-training world"
    assert 0 < probes.probe_count == probes.answered <= probes.asked == 284
    kept = decode_records(tiny_registry.store.get_bytes(probes.sha256))
    world = {r["question"] for r in map(json.loads, (EXAMPLES / "pretrain" / "qa.jsonl").read_text().splitlines())}
    assert len(kept) == probes.probe_count and {r["question"] for r in kept} <= world


def test_every_task_vector_and_merge_records_general_knowledge_kept(trained):
    probe_count = trained.get_base("tiny").probes.probe_count
    for corpus in ("harbor", "glassworks"):
        general = trained.list_task_vectors(corpus)[-1].metrics.general
        assert general is not None and general.count == probe_count
        assert general.kept == pytest.approx(general.correct / general.count)
    merged = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    assert merged.general is not None and merged.general.count == probe_count
    again = trained.get_merge(merged.id)
    assert again.general == merged.general
    # A model the registry does not hold is asked the same way (the study's joint retraining): the merge's
    # own model gives the figure its merge recorded, and the base keeps all of its own answers.
    loaded = load_model(trained.model_dir(merged.ref), "cpu")
    assert trained.general_knowledge(*loaded, "tiny", device="cpu") == merged.general
    base = trained.general_knowledge(*load_model(trained.base_dir("tiny"), "cpu"), "tiny", device="cpu")
    assert base is not None and (base.kept, base.correct) == (1.0, probe_count)
    assert trained.merge(["harbor"], strategy="ties", evaluate=False, progress=False).general is None


def test_a_channel_gates_on_general_knowledge_and_says_which_figure_fell_short(trained, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    memo = Memo(trained.settings.home, None)
    merged = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    kept = merged.general.kept
    assert "min general 1" in memo("channel", "set", "production", "--min-general", "1").stdout
    if kept < 1:
        with pytest.raises(GateRefused, match=rf"general knowledge kept {kept:.2f}, below 1"):
            trained.promote(merged.id, "production")
        assert trained.get_channel("production").current_merge_id is None
        assert trained.promote(merged.id, "production", force=True).forced
    memo("channel", "set", "production", "--min-general", f"{kept:.4f}")
    trained.promote(merged.id, "production")
    listed = json.loads(memo("channel", "list", "--json").stdout)
    assert listed[0]["min_general"] == pytest.approx(round(kept, 4))
    bad = memo("channel", "set", "production", "--min-general", "1.5", ok=False).stderr
    assert bad.strip().splitlines()[-1] == "Error: --min-general must be between 0 and 1, not 1.5"
    assert "gates: none" in memo("channel", "set", "production", "--no-gate").stdout


def test_a_merge_without_the_figure_is_refused_by_the_general_gate(trained):
    trained.set_min_general("production", 0.5)
    unmeasured = trained.merge(["harbor", "glassworks"], strategy="ties", evaluate=False, progress=False)
    with pytest.raises(GateRefused, match="no general-knowledge figure"):
        trained.promote(unmeasured.id, "production")


def test_the_cli_shows_general_knowledge_everywhere(trained, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    memo = Memo(trained.settings.home, None)
    shown = memo("base", "show", "tiny").stdout
    assert "general knowledge" in shown and "questions asked from the tiny base's pre-training world" in shown
    assert "probes" in memo("base", "list").stdout
    created = memo("merge", "--strategy", "ties", "harbor", "glassworks").stdout
    assert "general knowledge kept: " in created and " of the base's probe questions" in created
    assert "general" in memo("merge", "list").stdout
    data = json.loads(memo("merge", "show", "merge-1", "--json").stdout)
    assert set(data["general"]) == {"kept", "correct", "count", "probe_set"}


def test_a_user_probe_set_replaces_the_bank_from_then_on(trained, tmp_path, monkeypatch):
    memo = Memo(trained.settings.home, None)
    mine = tmp_path / "mine.jsonl"
    world = (EXAMPLES / "pretrain" / "qa.jsonl").read_text().splitlines()[:40]
    mine.write_text("\n".join(world) + "\n")
    before = trained.get_base("tiny").probes
    out = memo("base", "probe", "tiny", str(mine), "--no-bank").stdout
    after = trained.get_base("tiny").probes
    assert after.id != before.id and after.source == "mine.jsonl" and after.asked == 40
    assert f"answered {after.answered} of 40 questions asked from mine.jsonl" in out
    if after.probe_count:
        merged = trained.merge(["harbor"], strategy="ties", progress=False)
        assert merged.general.probe_set == after.id and merged.general.count == after.probe_count
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q?"}\n')
    error = memo("base", "probe", "tiny", str(broken), ok=False).stderr.strip().splitlines()
    assert len(error) == 1 and "needs a non-empty string 'answer'" in error[0]
    assert trained.get_base("tiny").probes.id == after.id
    with pytest.raises(InvalidInput, match="no probe questions"):
        trained.probe_base("tiny", [], bank=False)


def test_a_base_without_a_tokenizer_has_no_probe_set_and_no_figure(tiny_registry, tiny_model):
    record = tiny_registry.add_base(tiny_model, name="bare")
    assert record.probes is None


def test_a_quantized_model_directory_is_refused_when_added(tiny_registry, model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match=r"quantized model \(quantization_config: gguf\).*memo base add FILE.gguf"):
        tiny_registry.add_base(model_copy, name="quantized")
    assert [b.name for b in tiny_registry.list_bases()] == ["tiny"]


def test_a_base_whose_tokenizer_is_not_its_models_cannot_be_probed(tiny_registry, tiny_model, tmp_path):
    from tests.support.task_vectors import base_with_tokenizer

    record = tiny_registry.add_base(base_with_tokenizer(tiny_model, tmp_path), name="stand-in")
    assert record.probes is None
    with pytest.raises(InvalidInput, match="its tokenizer is not its model's"):
        tiny_registry.probe_base("stand-in", [])
    assert tiny_registry.get_base("stand-in").probes is None
