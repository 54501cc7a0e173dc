"""Retention measured on every merge: recall on each member corpus's questions, against its own model."""

from __future__ import annotations

import json
import re

import pytest

from executive.memory import LocalMemory
from registry.operations.questions import EVAL_SAMPLE, sample
from registry.store.errors import GateRefused
from tests.conftest import Memo
from training.evaluate import normalize
from training.qa_files import decode_records, pairs_of


def _task_vector(reg, corpus):
    from sqlalchemy import select

    from registry.store.schema import CorpusRow, TaskVectorRow

    with reg.db.read() as session:
        corpus_id = session.scalar(select(CorpusRow.id).where(CorpusRow.name == corpus))
        return session.scalars(select(TaskVectorRow).where(TaskVectorRow.corpus_id == corpus_id)).one()


def test_retention_is_merged_recall_over_own_on_the_same_questions(trained):
    record = trained.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    assert set(record.recall) == set(record.retention) == {"glassworks", "harbor"}
    directory = trained.model_dir(record.ref)
    memory = LocalMemory(directory)
    for corpus in ("harbor", "glassworks"):
        tv = _task_vector(trained, corpus)
        with trained.db.read() as session:
            from registry.store.schema import ReflectionSetRow

            sha = session.get(ReflectionSetRow, tv.reflection_set_id).sha256
        pairs = sample(pairs_of(decode_records(trained.store.get_bytes(sha))), EVAL_SAMPLE, tv.training["sft"]["seed"])
        answers = memory.answer([p.question for p in pairs])
        hits = sum(normalize(a) == normalize(p.answer) for a, p in zip(answers, pairs))
        got = record.recall[corpus]
        assert got.count == len(pairs) and got.exact_match == pytest.approx(hits / len(pairs))
        own = tv.metrics["recall"]["exact_match"]
        assert record.retention[corpus] == (pytest.approx(got.exact_match / own) if own else None)


def test_the_cli_prints_and_shows_retention(trained, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: rich tables keep their headers whole
    memo = Memo(trained.settings.home, None)
    created = memo("merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production").stdout
    assert "still knows" in created and "retention" in created
    shown = memo("merge", "show", "production").stdout
    assert "retention" in shown and "glassworks" in shown
    assert "settings and cost" in shown and "merge engine" in shown and "density" in shown
    assert not re.search(r"\d\.\d{5,}", shown), "figures are rounded"
    usage = memo("merge", "--strategy", "bogus", "harbor", ok=False).stderr
    assert "merge --help" in usage and "create" not in usage
    assert memo("merge", "--help").stdout.split(" merge ", 1)[1].startswith("[OPTIONS] CORPORA...")
    data = json.loads(memo("merge", "show", "production", "--json").stdout)
    assert set(data["retention"]) == {"glassworks", "harbor"}
    lowest = min(v for v in data["retention"].values() if v is not None)
    log = memo("log", "production").stdout
    assert "retention" in log and f"{lowest:.2f}" in log


def test_no_eval_records_no_retention(trained):
    memo = Memo(trained.settings.home, None)
    data = json.loads(memo("merge", "--strategy", "ties", "harbor", "observatory", "--no-eval", "--json").stdout)
    assert data["recall"] == {} and data["retention"] == {}
    assert "evaluation_seconds" in data["training_cost"]


# --- the promotion gate ---------------------------------------------------------------


@pytest.fixture
def gated(trained):
    """harbor trained long enough to recall some of its questions, so retention is a number."""
    from training.sft import SFTSettings

    trained.train("harbor", SFTSettings(steps=40, batch=8, lr=3e-3), device="cpu", progress=False)
    trained.train("glassworks", SFTSettings(steps=40, batch=8, lr=3e-3), device="cpu", progress=False)
    return trained


def test_the_gate_refuses_a_merge_below_it_and_keeps_the_merge(gated, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    memo = Memo(gated.settings.home, None)
    assert "min retention 0.8" in memo("channel", "set", "production", "--min-retention", "0.8").stdout
    result = memo("merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production", ok=False)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "merge-1 was recorded but not promoted to 'production'" in line and "below 0.8" in line
    assert "--force" in line and ("harbor" in line or "glassworks" in line)
    assert "still knows" in result.stdout  # the merge and its retention were shown first
    assert [m.id for m in gated.list_merges()] == [1]
    assert gated.get_channel("production").current_merge_id is None

    forced = memo("promote", "1", "--channel", "production", "--force")
    assert "channel production: no merge -> merge-1 (promote)" in forced.stdout
    log = json.loads(memo("log", "production", "--json").stdout)
    assert [(e["action"], e["to_merge_id"], e["forced"]) for e in log] == [
        ("configure", None, False),
        ("refused", 1, False),  # the refusal is history too; the channel did not move
        ("promote", 1, True),
    ]
    assert log[0]["reason"] == "min retention 0.8" and log[1]["reason"] == line.removeprefix("Error: ")


def test_the_gate_never_promotes_below_its_threshold(gated):
    merged = gated.merge(["harbor", "glassworks"], strategy="ties", progress=False)
    solo = gated.merge(["harbor"], strategy="ties", density=1.0, progress=False)
    assert solo.retention["harbor"] == pytest.approx(1.0)
    for record in (merged, solo):
        lowest = min(v for v in record.retention.values() if v is not None)
        for threshold in (0.0, 0.1, 0.3, 0.5, 0.8, 0.99, 1.0):
            channel = f"gate-{record.id}-{int(threshold * 100)}"
            gated.set_min_retention(channel, threshold)
            try:
                gated.promote(record.id, channel)
                promoted = True
            except GateRefused:
                promoted = False
            assert promoted == (lowest >= threshold), (record.retention, threshold)
            assert gated.get_channel(channel).current_merge_id == (record.id if promoted else None)


def test_a_merge_without_retention_cannot_pass_a_gate(gated):
    gated.set_min_retention("production", 0.5)
    record = gated.merge(["harbor", "glassworks"], strategy="ties", evaluate=False, progress=False)
    with pytest.raises(GateRefused, match="no retention figures"):
        gated.promote(record.id, "production")
    gated.set_min_retention("production", None)  # the gate removed: it promotes
    assert gated.promote(record.id, "production").to_merge_id == record.id


def test_rollback_is_not_gated_and_bad_thresholds_are_refused(gated):
    memo = Memo(gated.settings.home, None)
    first = gated.merge(["harbor"], strategy="ties", density=1.0, channel="production", progress=False)
    second = gated.merge(["harbor", "glassworks"], strategy="ties", channel="production", progress=False)
    gated.set_min_retention("production", 1.0)
    assert gated.rollback("production").to_merge_id == first.id
    assert second.id != first.id
    bad = memo("channel", "set", "production", "--min-retention", "1.5", ok=False)
    assert bad.exit_code == 1 and "between 0 and 1" in bad.stderr
    both = memo("channel", "set", "production", "--min-retention", "0.5", "--no-gate", ok=False)
    assert "not both" in both.output
