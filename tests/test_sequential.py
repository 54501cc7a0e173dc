"""Sequential integration: a corpus trained onto a channel's model (earlier members rehearsed) is served
as the merge of those members and it, at the cost of its one training; healed only where one falls short.
On one person's set-up and a team's (PostgreSQL + S3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from starlette.testclient import TestClient

from registry import GateRefused, Registry
from registry.store.errors import Conflict, InvalidInput
from registry.store.schema import MergeRow
from registry.ui import create_app
from tests.conftest import Memo
from tests.support.models import EXAMPLES, SMALL
from tests.support.snapshot import count, registry_state
from training.retain import RetainSettings
from training.sft import SFTSettings

PAIRS, STEPS, LR = 12, 30, 3e-3  # as tests/test_strategies.py: each corpus learned well by the small base
CORPORA = ["glassworks", "harbor"]
SETTINGS = SFTSettings(steps=STEPS, batch=8, lr=LR)


def heal(**kwargs) -> RetainSettings:
    return RetainSettings(**{"max_steps": STEPS, "check_every": 2, "batch": 8, "lr": LR, **kwargs})


def _corpora(reg: Registry, root: Path, base: str = "tiny") -> None:
    for name in CORPORA:
        qa = root / f"{name}.jsonl"
        qa.write_text("\n".join((EXAMPLES / name / "qa.jsonl").read_text().splitlines()[:PAIRS]) + "\n")
        reg.add_corpus(name, sorted((EXAMPLES / name).glob("*.md")), base=base)
        reg.import_reflections(name, qa)


def _weights(reg: Registry, ref: str) -> dict[str, torch.Tensor]:
    return {n: t for f in sorted(reg.model_dir(ref).glob("*.safetensors")) for n, t in load_file(f).items()}


@pytest.fixture
def chain(registry: Registry, tmp_path: Path) -> Registry:
    """The small base, two corpora, and glassworks (trained onto an empty channel: from the base) served
    alone on channel ``main``."""
    registry.create_tiny_base("tiny", SMALL, progress=False)
    _corpora(registry, tmp_path)
    first = registry.train("glassworks", SETTINGS, onto="main", device="cpu", progress=False)
    assert first is not None and first.trained_onto is None and "rehearsal" not in first.training
    registry.merge(["glassworks"], strategy="sequential", channel="main", progress=False, device="cpu")
    return registry


def test_a_corpus_trained_onto_a_channel_is_served_as_its_members_plus_it(chain: Registry):
    reg = chain
    m1 = reg.get_merge("main")
    assert m1.strategy == "sequential" and m1.parameters["start"] == "glassworks@v1"
    assert m1.training_cost.examples == 0 and m1.retention == {"glassworks": pytest.approx(1.0)}

    tv = reg.train("harbor", SETTINGS, onto="main", device="cpu", progress=False)
    assert tv is not None and tv.trained_onto == f"merge-{m1.id}"
    # Every earlier pair once; the new pairs repeated to make them half the examples; the corpus's own cost.
    assert tv.training["rehearsal"] == {"share": 0.5, "earlier": PAIRS, "repeats": 1}
    assert tv.cost.examples == STEPS * 8

    merged = reg.merge(CORPORA, channel="main", retain=heal(), progress=False, device="cpu")  # auto
    assert merged.strategy == "sequential" and merged.parent_merge_id == m1.id
    assert merged.parameters["start"] == "harbor@v1" and merged.parameters["trained_onto"] == f"merge-{m1.id}"
    assert [m.ref for m in merged.members] == ["glassworks@v1", "harbor@v1"]
    # Every member kept without healing: the arrival cost harbor's one training, nothing more.
    assert merged.lowest_retention is not None and merged.lowest_retention >= 0.9
    assert merged.training_cost.examples == merged.training_cost.steps == 0
    assert reg.get_channel("main").current_merge_id == merged.id
    # The served model is the base plus harbor's deltas, exactly.
    served, applied = _weights(reg, f"merge-{merged.id}"), _weights(reg, "harbor@v1")
    assert served.keys() == applied.keys() and all(torch.equal(served[n], applied[n]) for n in served)

    # Rolled back, the same training onto the same start is found again, and so is the merge.
    reg.rollback("main", reason="back")
    again = reg.train("harbor", SETTINGS, onto="main", device="cpu", progress=False, reuse=True)
    assert again is not None and again.reused and again.ref == "harbor@v1"
    assert reg.merge(CORPORA, channel="main", retain=heal(), progress=False, device="cpu").id == merged.id
    assert reg.get_channel("main").current_merge_id == merged.id
    # Another rehearsal share is another training, of the same start.
    other = reg.train("harbor", SETTINGS, onto="main", rehearse=0.25, device="cpu", progress=False, reuse=True)
    assert other is not None and other.ref == "harbor@v2" and other.trained_onto == f"merge-{merged.id}"
    assert reg.verify().ok


def test_a_member_that_falls_short_is_healed_and_the_cost_recorded(chain: Registry):
    """Rehearsed at 5%, glassworks is forgotten: the sequential merge heals until every member keeps the
    target, from the trained model, and records what healing cost."""
    reg = chain
    tv = reg.train("harbor", SETTINGS, onto="main", rehearse=0.05, device="cpu", progress=False)
    assert tv is not None and tv.training["rehearsal"]["repeats"] == 19
    merged = reg.merge(CORPORA, retain=heal(target=0.9), promote=False, progress=False, device="cpu")
    checks = merged.training_cost.retain.checks
    assert merged.strategy == "sequential" and checks[0]["step"] == 0
    assert checks[0]["retention"]["glassworks"] < 0.5  # forgotten before healing
    assert merged.training_cost.retain.reached and min(checks[-1]["retention"].values()) >= 0.9
    assert merged.training_cost.examples == merged.training_cost.steps * 8 > 0
    assert merged.lowest_retention is not None and merged.lowest_retention >= 0.9


def test_the_gate_refuses_a_sequential_merge_below_it(chain: Registry):
    """No healing allowed (--max-steps 0) and a member forgotten: recorded, not promoted, the refusal kept."""
    reg = chain
    reg.set_min_retention("main", 0.9)
    reg.train("harbor", SETTINGS, onto="main", rehearse=0.05, device="cpu", progress=False)
    head = reg.get_channel("main").current_merge_id
    with pytest.raises(GateRefused, match="glassworks"):
        reg.merge(CORPORA, channel="main", retain=heal(max_steps=0), progress=False, device="cpu")
    assert reg.get_channel("main").current_merge_id == head
    assert reg.list_merges()[-1].strategy == "sequential"


def test_sequential_refuses_members_its_carrier_was_not_trained_onto(chain: Registry):
    reg = chain
    reg.train("harbor", SETTINGS, onto="main", device="cpu", progress=False)
    before = count(reg, MergeRow)
    # harbor@v1 holds glassworks too: served alone it is not the merge of harbor alone.
    with pytest.raises(InvalidInput, match="none of harbor@v1 is") as refused:
        reg.merge(["harbor"], strategy="sequential", progress=False, device="cpu")
    assert "\n" not in str(refused.value)
    # glassworks@v1 was trained from the base: it is not the merge of itself and harbor.
    reg.train("glassworks", SFTSettings(steps=STEPS, batch=8, lr=LR, seed=1), device="cpu", progress=False)
    with pytest.raises(InvalidInput):
        reg.merge(["glassworks@v2", "harbor"], strategy="sequential", progress=False, device="cpu")
    assert count(reg, MergeRow) == before


def test_bad_onto_input_changes_nothing(chain: Registry):
    reg = chain
    reg.create_tiny_base("other", replace(SMALL, seed=1), progress=False)
    before = registry_state(reg)
    with pytest.raises(InvalidInput, match="rehearse"):
        reg.train("harbor", SETTINGS, onto="main", rehearse=1.5, device="cpu", progress=False)
    with pytest.raises(Conflict, match="another base model"):  # main serves a model of base tiny
        reg.register(
            "atlas",
            sorted((EXAMPLES / "observatory").glob("*.md")),
            base="other",
            qa=EXAMPLES / "observatory" / "qa.jsonl",
            settings=SETTINGS,
            onto="main",
            device="cpu",
            progress=False,
        )
    assert registry_state(reg) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_trains_onto_a_channel_and_merges_sequentially(memo: Memo, tmp_path: Path):
    with Registry.open(memo.home) as reg:
        reg.create_tiny_base("tiny", SMALL, progress=False)
        _corpora(reg, tmp_path)
    train = ("--steps", STEPS, "--batch", 8, "--lr", LR, "--device", "cpu")
    assert "trained onto" not in memo("train", "glassworks", "--onto", "main", *train).output
    memo("merge", "glassworks", "--strategy", "sequential", "--channel", "main")
    out = memo("train", "harbor", "--onto", "main", *train).output
    assert "registered task vector harbor@v1, trained onto merge-1:" in out
    bad = memo("train", "harbor", "--onto", "main", "--rehearse", "0", ok=False)
    assert bad.exit_code != 0 and "above 0 and below 1" in bad.output and len(bad.output.strip().splitlines()) == 1
    record = memo("merge", "glassworks", "harbor", "--channel", "main", "--json").output
    assert '"strategy": "sequential"' in record and '"trained_onto": "merge-1"' in record
    with Registry.open(memo.home) as reg, TestClient(create_app(reg), base_url="http://localhost") as client:
        page = client.get("/corpora/harbor").text  # the web page links a task vector to where it started
        assert '<a href="/merges/1">merge-1</a>' in page and "the base" in client.get("/corpora/glassworks").text
