"""`memo demo` runs end to end offline (the README's first command), shortened: 2 corpora, few steps."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner
from huggingface_hub import constants
from starlette.testclient import TestClient

from registry import Registry
from registry.cli import cli
from registry.demo.local_hub import local_hub
from registry.ui import create_app
from tests.support.pages import crawl

ARGS = ["demo", "--corpora", "2", "--pretrain-steps", "5", "--train-steps", "5", "--device", "cpu"]


def test_demo_runs_every_journey_and_the_study(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_users_own_token")
    home = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["--home", str(home), *ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "0 problems" in out and "held-out" in out and "glassworks@v1" in out
    assert "joint retraining" in out and "paper 33% less" in out and "11-19 points" in out
    assert "general kept" in out and "hallucination" in out
    assert os.environ["HF_TOKEN"] == "hf_users_own_token", "the demo's local Hub token must not leak out"
    assert f"memo --home {home} ui" in out

    with Registry.open(home) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny"]
        corpora = reg.list_corpora()
        # The second corpus has a second task vector: the one the study's sequential path trained onto the
        # first corpus's model.
        assert [(c.name, c.latest_version) for c in corpora] == [("glassworks", 1), ("harbor", 2)]
        assert reg.list_task_vectors("harbor")[1].trained_onto is not None
        log = reg.log("production")
        assert [e.action for e in log] == ["configure", "promote", "promote", "rollback"]
        first, second = log[1].to_merge_id, log[2].to_merge_id
        assert log[3].from_merge_id == second and log[3].to_merge_id == first
        assert reg.get_channel("production").current_merge_id == first
        # Every move was published first: the last publication is the rolled-back-to merge.
        pubs = reg.publications()
        assert [p.merge_id for p in pubs] == [first, second, first]
        assert {m.id for m in reg.list_merges()} >= {first, second}
        assert len(reg.get_merge(second).members) == 2
        assert reg.get_merge(second).strategy == "warm"  # memo merge --channel (auto) as corpora arrive
        with TestClient(create_app(reg), base_url="http://localhost") as client:  # the demo's registry as its web page
            assert {f"/merges/{first}", f"/merges/{second}", "/channels/production"} <= crawl(client)
    png = home / "continual.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    again = CliRunner().invoke(cli, ["--home", str(home), "demo"])
    assert again.exit_code == 1 and "already holds a registry" in again.stderr


def test_demo_json_carries_the_study(tmp_path):
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "d"), *ARGS, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first, second = data["arrivals"]
    assert (first["k"], second["k"]) == (1, 2)
    methods = {"own", "ties", "ties+heal", "warm", "retrain", "sequential", "joint"}
    assert set(second["recall"]) == methods
    # General knowledge kept is what each merge recorded (the base's probe set asked again).
    assert set(second["general"]) == methods
    with Registry.open(tmp_path / "d") as reg:
        recorded = reg.get_merge(int(second["merges"]["ties"].split("-")[1])).general
    assert second["general"]["ties"] == (recorded.kept if recorded else None)
    assert data["probes"] is None or data["probes"]["probe_count"] >= 0
    # Every model is asked the same questions about people no corpus holds, the base too.
    assert set(second["hallucination"]) == methods
    assert all(0 <= v <= 1 for v in [*second["hallucination"].values(), data["base_hallucination"]])
    assert set(second["recall"]["joint"]) == {"glassworks", "harbor"}
    # Joint retraining runs as many steps per corpus as a corpus gets alone: twice as many examples at K=2.
    assert second["examples"]["joint"] == 2 * second["examples"]["alone"] == 2 * 5 * 16
    # The sequential path trained harbor onto glassworks's model for 1.1x its steps (6 of 16), and healed
    # only what fell short.
    healed = reg_cost(tmp_path / "d", second["merges"]["sequential"])
    assert second["examples"]["sequential"] == 6 * 16 + healed
    cum = data["cumulative"]
    assert cum["joint"][1]["seconds"] > cum["joint"][0]["seconds"] > 0
    # The merge paths pay each corpus's own training: at least 5 steps x 16 examples per arrival.
    assert cum["ties"][1]["examples"] == 2 * 5 * 16 and cum["ties+heal"][1]["examples"] >= 2 * 5 * 16
    assert cum["joint"][1]["examples"] == 5 * 16 + 2 * 5 * 16
    assert [e["action"] for e in data["log"]] == ["configure", "promote", "promote", "rollback"]
    assert data["verify"]["problems"] == 0
    # The headline figures the CLI prints come from the study, so scripts get them too.
    headline, last = data["headline"], data["arrivals"][-1]["recall"]
    mean = {m: sum(s["exact"] for s in last[m].values()) / 2 for m in ("ties", "joint")}
    assert headline["k"] == 2
    assert headline["ties_gap_points"] == pytest.approx((mean["joint"] - mean["ties"]) * 100)
    assert set(headline["kept_vs_joint"]) == {"ties+heal", "warm", "retrain", "sequential"}
    assert [s[1] for s in headline["seconds_production_vs_joint"]] == [c["seconds"] for c in cum["joint"]]
    assert [e[1] for e in headline["examples_production_vs_joint"]] == [c["examples"] for c in cum["joint"]]


def test_local_hub_restores_the_environment(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    xet = constants.HF_HUB_DISABLE_XET
    with local_hub() as hub:
        assert os.environ["HF_TOKEN"].startswith("hf_memo_local_") and constants.HF_HUB_DISABLE_XET
        assert hub.url.startswith("http://127.0.0.1:")
    assert "HF_TOKEN" not in os.environ and xet == constants.HF_HUB_DISABLE_XET


def test_unknown_questions_name_nobody_the_example_corpora_hold():
    from registry import examples_dir
    from registry.demo.unknowns import names, unknown_questions

    questions = unknown_questions()
    assert len(questions) == len(set(questions)) == 60 and questions == unknown_questions()  # seeded
    corpora = " ".join(p.read_text() for p in examples_dir().glob("*/*.md"))
    assert all(names(q) for q in questions), "each asks about someone by name"
    assert not any(re.search(rf"\b{n}\b", corpora) for q in questions for n in names(q))
    assert names("Where did Ka Rimo's mentor work?") == {"Ka", "Rimo"}


def reg_cost(home, ref: str) -> int:
    with Registry.open(home) as reg:
        return reg.get_merge(int(ref.split("-")[1])).training_cost.examples
