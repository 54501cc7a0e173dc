"""`memo ui`: every page renders from a real registry, each page's JSON twin gives the CLI's records,
no route changes anything, and whatever users typed is shown as text, never as markup."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import pytest
from starlette.testclient import TestClient

from registry.ui import create_app, svg
from tests.conftest import memo_subprocess_env
from tests.support.pages import SCRIPT, crawl, fill_for_pages
from tests.support.snapshot import registry_state
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector


@pytest.fixture
def ui(trained, tmp_path):
    merges = fill_for_pages(trained, tmp_path)
    with TestClient(create_app(trained), base_url="http://localhost") as client:
        yield trained, client, merges


def test_every_page_renders_and_every_link_resolves(ui):
    reg, client, (first, second) = ui
    seen = crawl(client)
    assert {
        "/channels/production",
        f"/merges/{first.id}",
        f"/merges/{second.id}",
        "/corpora/harbor",
        "/retention",
    } <= seen


def test_the_pages_show_what_the_registry_holds(ui):
    reg, client, (first, second) = ui
    home = client.get("/").text
    assert f'href="/merges/{first.id}"' in home and "0.50" in home  # production's merge after the rollback, its gate
    channel = client.get("/channels/production").text
    assert channel.count("<tr>") == 1 + len(reg.log("production")) and 'id="timeline"' in channel
    merge = client.get(f"/merges/{second.id}").text
    assert 'id="lineage"' in merge and 'id="retention"' in merge and "merge_method: ties" in merge
    heat = client.get("/retention").text
    assert 'id="heatmap"' in heat and heat.count("<rect") == 6  # three merges x two corpora
    corpus = client.get("/corpora/harbor").text
    assert "v1" in corpus and 'id="task-vectors"' in corpus


def test_the_json_twins_are_the_records(ui):
    reg, client, (first, second) = ui
    assert client.get("/api/merges").json() == [m.to_json() for m in reg.list_merges()]
    assert client.get(f"/api/merges/{second.id}").json()["merge"] == reg.get_merge(second.id).to_json()
    assert client.get("/api/channels/production").json()["events"] == [e.to_json() for e in reg.log("production")]
    assert client.get("/api/corpora/harbor").json()["task_vectors"][0] == reg.list_task_vectors("harbor")[-1].to_json()
    cells = {(c["corpus"], c["merge"]): c["retention"] for c in client.get("/api/retention").json()["cells"]}
    merges = [m.id for m in reg.list_merges()]
    assert set(cells) == {(c, m) for m in merges for c in ("glassworks", "harbor")}
    assert cells == {(c, m.id): m.retention.get(c) for m in reg.list_merges() for c in ("glassworks", "harbor")}
    assert (
        client.get("/api/merges/999").status_code == 404
        and "unknown merge" in client.get("/api/merges/999").json()["error"]
    )


def test_nothing_users_typed_becomes_markup(ui):
    reg, client, _ = ui
    for path in ("/", "/channels/production", "/corpora/notes", "/corpora"):
        html = client.get(path).text
        assert SCRIPT not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/channels/production").text
    assert "&lt;img src=x onerror=alert(1)&gt;.md" in client.get("/corpora/notes").text


def test_the_ui_is_read_only(ui):
    reg, client, (first, _) = ui
    before = registry_state(reg)
    for path in ("/", f"/merges/{first.id}", "/api/merges", "/channels/production"):
        for method in ("post", "put", "delete", "patch"):
            assert getattr(client, method)(path).status_code == 405
    assert client.get("/merges/999").status_code == 404 and client.get("/channels/nowhere").status_code == 404
    assert registry_state(reg) == before


def test_memo_ui_serves_the_pages_and_a_taken_port_is_one_line(ui):
    reg, _, (first, _) = ui
    env = memo_subprocess_env(reg.settings.home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry", "ui", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://\S+/", line)[0]  # type: ignore[index]
        with urllib.request.urlopen(f"{url}merges/{first.id}", timeout=30) as response:
            assert response.status == 200 and f"merge-{first.id}" in response.read().decode()
        port = url.rstrip("/").rsplit(":", 1)[1]
        taken = subprocess.run(
            [sys.executable, "-m", "registry", "ui", "--port", port], env=env, capture_output=True, text=True
        )
        assert taken.returncode == 1 and taken.stderr.strip().splitlines() == [
            f"Error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_gate_refusal_is_in_the_channel_history(ui):
    reg, client, _ = ui
    refused = [e for e in reg.log("production") if e.action == "refused"]
    assert len(refused) == 1 and "no retention figures" in refused[0].reason
    assert reg.get_channel("production").current_merge_id == refused[0].from_merge_id, "the channel did not move"
    page = client.get("/channels/production").text
    assert "refused" in page and f'href="/merges/{refused[0].to_merge_id}"' in page


def test_the_pages_read_a_team_registry(registry, tiny_model, docs, tmp_path):
    """The same pages over SQLite + local blobs and over PostgreSQL + a bucket (a merge's
    mergekit_config.yml is read from the blob store)."""
    registry.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
    for seed, name in enumerate(("atlas", "harbor")):
        register_random_task_vector(registry, name, docs, tmp_path, seed)
    merged = registry.merge(["atlas", "harbor"], strategy="ties", progress=False, evaluate=False)
    registry.promote(merged.id, "production", reason="first")
    with TestClient(create_app(registry), base_url="http://localhost") as client:
        assert {"/channels/production", f"/merges/{merged.id}", "/corpora/atlas"} <= crawl(client)
        assert "merge_method: ties" in client.get(f"/api/merges/{merged.id}").json()["mergekit_config"]


def test_the_charts_escape_every_label_and_scale_to_their_values():
    label = "<b>x</b>&"
    charts = [
        svg.bars([svg.Bar(label, 0.5)], [(label, 0.8)]),
        svg.timeline([(label, 0.5), (label, 1.0)], 0.8),
        svg.lineage([svg.Node("a", label, "/corpora/a?b=<c>", 0)], []),
        svg.heatmap([label], [1], {(label, 1): 0.5}),
    ]
    for chart in charts:
        assert "<b>" not in chart and "&lt;b&gt;x&lt;/b&gt;&amp;" in chart
    assert 'width="160.0"' in charts[0]  # half of the 320-pixel scale
    assert svg.retention_color(1.0) == "rgb(40,160,70)" and svg.retention_color(None) == "#d9d9d9"
    assert svg.retention_color(0.0) == "rgb(215,48,70)"


def test_the_page_answers_only_its_own_host_names(trained):
    """A page elsewhere cannot read the registry through a name it points at 127.0.0.1 (DNS rebinding)."""
    for base_url, status in (("http://evil.example", 400), ("http://localhost:8200", 200), ("http://127.0.0.1", 200)):
        with TestClient(create_app(trained), base_url=base_url) as client:
            assert client.get("/api/corpora").status_code == status, base_url
    with TestClient(create_app(trained, allowed_hosts={"memo.lan"}), base_url="http://memo.lan") as client:
        assert client.get("/").status_code == 200


def test_a_trained_merge_page_says_why_it_has_no_mergekit_config(trained):
    from training.settings import RetainSettings

    healed = trained.merge(
        ["harbor", "glassworks"],
        strategy="ties+heal",
        retain=RetainSettings(target=0.5, max_steps=4),
        progress=False,
        evaluate=False,
        device="cpu",
    )
    with TestClient(create_app(trained), base_url="http://localhost") as client:
        page = client.get(f"/merges/{healed.id}").text
    assert "None: a trained strategy (ties+heal)" in page and '<pre id="config">' not in page


def test_figures_read_one_way_and_an_unknown_page_is_a_page(ui):
    reg, client, (first, second) = ui
    merge = client.get(f"/merges/{second.id}").text
    settings = merge.split('id="parameters"')[1].split("</table>")[0]
    assert "{" not in settings and not re.search(r"\d\.\d{5,}", settings)  # no raw dicts, no 16-digit floats
    assert "<th>merge engine</th>" in settings and re.search(r"<td>\d+\.\d s</td>", settings)
    home = client.get("/").text
    assert not re.search(r"\b1 (bases|corpora|merges|task vectors)\b", home) and "1 base<" in home
    page = client.get("/nowhere")
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text and "there is no page at /nowhere" in page.text
    assert client.get("/api/nowhere").json() == {"error": "there is no page at /api/nowhere"}
    bad = client.get("/retention?last=0")
    assert bad.status_code == 400 and "<h1>Bad request</h1>" in bad.text


def test_the_channel_chart_spreads_close_retentions():
    chart = svg.timeline([("a", 0.91), ("b", 0.96)], 0.9)
    ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', chart)]
    assert abs(ys[0] - ys[1]) > 20 and ">0.8<" in chart  # on 0-1 they would be 5 px apart
    assert svg.axis_floor([]) == 0.0 and svg.axis_floor([0.02]) == 0.0 and svg.axis_floor([1.0]) == 0.9


def test_figures_are_named_and_rounded_one_way():
    from registry import figures

    assert [figures.count(n, "base") for n in (0, 1, 2)] == ["0 bases", "1 base", "2 bases"]
    assert figures.count(1, "corpus", "corpora") == "1 corpus" and figures.fraction(None) == "n/a"
    assert figures.seconds(5.6123456789) == "5.6 s" and figures.fraction(0.912345) == "0.91"
    rows = figures.settings_rows({"density": 0.30000000000000004, "retain": {"target": 0.9, "lr": 3e-4}, "x": [1, 2]})
    assert rows == [("density", "0.3"), ("retain.target", "0.9"), ("retain.lr", "0.0003"), ("x", "1, 2")]
