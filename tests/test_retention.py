"""Retention measured on every merge: recall on each member corpus's questions, against its own model."""

from __future__ import annotations

import json

import pytest

from executive.memory import LocalMemory
from registry.evaluation import model_dir
from registry.training_ops import EVAL_SAMPLE, sample
from tests.conftest import Memo
from training.evaluate import normalize
from training.qa_files import decode_records, pairs_of


def _task_vector(reg, corpus):
    from sqlalchemy import select

    from registry.schema import CorpusRow, TaskVectorRow

    with reg.db.read() as session:
        corpus_id = session.scalar(select(CorpusRow.id).where(CorpusRow.name == corpus))
        return session.scalars(select(TaskVectorRow).where(TaskVectorRow.corpus_id == corpus_id)).one()


def test_a_single_corpus_merge_at_full_density_keeps_everything(trained):
    record = trained.merge(["harbor"], density=1.0, progress=False)
    own = _task_vector(trained, "harbor").metrics["recall"]
    assert record.recall["harbor"]["own"] == own["exact_match"]
    assert record.recall["harbor"]["count"] == own["count"]
    assert record.recall["harbor"]["exact_match"] == pytest.approx(own["exact_match"])
    if own["exact_match"]:
        assert record.retention["harbor"] == pytest.approx(1.0)
    assert record.training_cost["merge_seconds"] > 0 and record.training_cost["evaluation_seconds"] > 0


def test_retention_is_merged_recall_over_own_on_the_same_questions(trained):
    record = trained.merge(["harbor", "glassworks"], progress=False)
    assert set(record.recall) == set(record.retention) == {"glassworks", "harbor"}
    directory = model_dir(trained.db, trained.store, trained.settings.home, record.ref)
    memory = LocalMemory(directory)
    for corpus in ("harbor", "glassworks"):
        tv = _task_vector(trained, corpus)
        with trained.db.read() as session:
            from registry.schema import ReflectionSetRow

            sha = session.get(ReflectionSetRow, tv.reflection_set_id).sha256
        pairs = sample(pairs_of(decode_records(trained.store.get_bytes(sha))), EVAL_SAMPLE, tv.training["sft"]["seed"])
        answers = memory.answer([p.question for p in pairs])
        hits = sum(normalize(a) == normalize(p.answer) for a, p in zip(answers, pairs))
        got = record.recall[corpus]
        assert got["count"] == len(pairs) and got["exact_match"] == pytest.approx(hits / len(pairs))
        own = tv.metrics["recall"]["exact_match"]
        assert record.retention[corpus] == (pytest.approx(got["exact_match"] / own) if own else None)


def test_the_cli_prints_and_shows_retention(trained, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: rich tables keep their headers whole
    memo = Memo(trained.settings.home, None)
    created = memo("merge", "harbor", "glassworks", "--channel", "production").stdout
    assert "still knows" in created and "retention" in created
    shown = memo("merge", "show", "production").stdout
    assert "retention" in shown and "glassworks" in shown
    data = json.loads(memo("merge", "show", "production", "--json").stdout)
    assert set(data["retention"]) == {"glassworks", "harbor"}
    lowest = min(v for v in data["retention"].values() if v is not None)
    log = memo("log", "production").stdout
    assert "retention" in log and f"{lowest:.2f}" in log


def test_no_eval_records_no_retention(trained):
    memo = Memo(trained.settings.home, None)
    data = json.loads(memo("merge", "harbor", "observatory", "--no-eval", "--json").stdout)
    assert data["recall"] == {} and data["retention"] == {}
    assert "evaluation_seconds" in data["training_cost"]
