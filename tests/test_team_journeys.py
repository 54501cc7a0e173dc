"""Every journey on a team's set-up, PostgreSQL with blobs in S3: register, merge with every
strategy, retention and the gate, publish, rollback, serve following a channel, verify and gc;
then a teammate's home (an empty cache) sees, serves and exports the same models."""

from __future__ import annotations

import pytest

from registry import GateRefused, Registry
from tests.conftest import HUB_TOKEN
from tests.support.models import EXAMPLES, SMALL
from training.retain import RetainSettings
from training.sft import SFTSettings

pytestmark = pytest.mark.postgres

PAIRS, STEPS, LR = 12, 30, 3e-3  # as tests/test_strategies.py: each corpus learned well, a bare merge forgets
CORPORA = ["glassworks", "harbor"]
REPO = "team/memory"


def _retain() -> RetainSettings:
    return RetainSettings(target=0.8, max_steps=STEPS, check_every=2, batch=8, lr=LR)


def _export(reg: Registry, merge_id: int, where) -> dict[str, bytes]:
    out = reg.export(merge_id, where)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != "memo-provenance.json"}


@pytest.fixture
def team_urls(postgres, s3_server, monkeypatch):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    return postgres.create_database(), s3_server.create_bucket()


def test_every_journey_on_postgresql_and_s3(team_urls, hub, tmp_path):
    database, bucket = team_urls
    with Registry.init(tmp_path / "alice", database_url=database, blobs=bucket) as reg:
        reg.create_tiny_base("tiny", SMALL, progress=False)
        for name in CORPORA:
            qa = tmp_path / f"{name}.jsonl"
            qa.write_text("\n".join((EXAMPLES / name / "qa.jsonl").read_text().splitlines()[:PAIRS]) + "\n")
            settings = SFTSettings(steps=STEPS, batch=8, lr=LR)
            docs = sorted((EXAMPLES / name).glob("*.md"))
            tv = reg.register(name, docs, base="tiny", qa=qa, settings=settings, device="cpu", progress=False)
            assert tv is not None and tv.metrics.recall is not None and tv.metrics.recall.exact_match >= 0.75
        reg.link_channel("production", REPO, endpoint=hub.url)
        reg.set_min_retention("production", 0.8)

        with pytest.raises(GateRefused):  # the bare merge forgets: recorded, not promoted
            reg.merge(CORPORA, strategy="ties", channel="production", progress=False, device="cpu")
        healed = reg.merge(
            CORPORA, strategy="ties+heal", channel="production", retain=_retain(), progress=False, device="cpu"
        )
        assert healed.lowest_retention is not None and healed.lowest_retention >= 0.8
        assert reg.get_channel("production").current_merge_id == healed.id
        warm = reg.merge(CORPORA, strategy="warm", channel="production", retain=_retain(), progress=False, device="cpu")
        assert warm.parameters["start"] == f"merge-{healed.id}" and warm.lowest_retention >= 0.8
        retrained = reg.merge(
            CORPORA, strategy="retrain", retain=_retain(), promote=False, progress=False, device="cpu"
        )
        assert retrained.parameters["start"] == "base" and retrained.id not in (healed.id, warm.id)

        # Published as the channel moved, and rolled back as a new commit equal to the healed merge.
        assert (
            hub.main_files(REPO)["model.safetensors"] == _export(reg, warm.id, tmp_path / "warm")["model.safetensors"]
        )
        reg.rollback("production", reason="back to the healed merge")
        healed_files = _export(reg, healed.id, tmp_path / "healed")
        assert hub.main_files(REPO)["model.safetensors"] == healed_files["model.safetensors"]
        assert [p.merge_id for p in reg.publications()] == [healed.id, warm.id, healed.id]

        ref, memory = reg.channel_source("production", device="cpu").current()
        question = reg.questions("harbor")[0].question
        assert ref == f"merge-{healed.id}" and memory.answer([question])[0]
        assert reg.verify().ok and reg.gc(dry_run=True, grace_seconds=0).removed == ()

    with Registry.init(tmp_path / "bob", database_url=database, blobs=bucket) as teammate:
        assert teammate.get_channel("production").current_merge_id == healed.id
        assert _export(teammate, healed.id, tmp_path / "bob-healed") == healed_files
        ref, memory = teammate.channel_source("production", device="cpu").current()
        assert ref == f"merge-{healed.id}" and memory.answer([question])[0]
        assert [m.strategy for m in teammate.list_merges()] == ["ties", "ties+heal", "warm", "retrain"]
