"""Webhooks: every promotion, rollback and gate refusal told, signed, to a receiver on 127.0.0.1, with
retries, failures recorded, and a failing or hanging receiver never blocking or undoing the move."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from registry import GateRefused, InvalidInput, NotFound
from registry.operations import webhook_deliveries
from registry.operations.webhook_post import ATTEMPTS, BACKOFF_S
from tests.conftest import Memo
from tests.support.cli import assert_one_line_error
from tests.support.receiver import Receiver
from tests.support.snapshot import registry_state
from tests.support.task_vectors import base_with_tokenizer, register_random_task_vector

SECRET_ENV = "MEMO_TEST_HOOK_SECRET"
SECRET = "s3cret-for-the-receiver"


@pytest.fixture
def reg(registry, tiny_model, docs, tmp_path, monkeypatch):
    """A registry (SQLite, and PostgreSQL + S3) with two task vectors and a short webhook timeout."""
    monkeypatch.setenv("MEMO_WEBHOOK_TIMEOUT", "0.5")
    registry.add_base(base_with_tokenizer(tiny_model, tmp_path), name="tiny")
    for seed, name in enumerate(("atlas", "harbor")):
        register_random_task_vector(registry, name, docs, tmp_path, seed)
    return registry


def _merges(reg, count: int = 2) -> list[int]:
    sets = (["atlas"], ["atlas", "harbor"], ["harbor"])
    return [reg.merge(members, strategy="ties", evaluate=False, progress=False).id for members in sets[:count]]


def _verified(request, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-memo-signature-256"], expected)


def test_every_move_is_told_signed_once_and_recorded(reg, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    first, second = _merges(reg)
    with Receiver() as receiver:
        hooks = reg.set_webhooks("production", add=[receiver.url], secret_env=SECRET_ENV)
        assert [(h.url, h.secret_env, h.active) for h in hooks] == [(receiver.url, SECRET_ENV, True)]
        reg.promote(first, "production", reason="first")
        reg.promote(second, "production")
        reg.rollback("production", reason="back")
        reg.set_min_retention("production", 0.5)
        with pytest.raises(GateRefused):
            reg.promote(second, "production")
        assert reg.promote(first, "production") is None  # no move: nothing to tell
    told = [r.payload for r in receiver.received]
    assert [(p["action"], p["from"], p["to"]) for p in told] == [
        ("promote", None, f"merge-{first}"),
        ("promote", f"merge-{first}", f"merge-{second}"),
        ("rollback", f"merge-{second}", f"merge-{first}"),
        ("refused", f"merge-{first}", f"merge-{second}"),
    ]
    assert all(_verified(r, SECRET) for r in receiver.received)
    assert not _verified(receiver.received[0], "another secret")
    assert [r.headers["x-memo-event"] for r in receiver.received] == ["promote", "promote", "rollback", "refused"]
    assert told[0]["channel"] == "production" and told[0]["reason"] == "first" and told[0]["hub"] is None
    assert told[1]["merge"]["members"] == ["atlas@v1", "harbor@v1"] and told[1]["merge"]["strategy"] == "ties"
    assert "no retention figures" in told[3]["reason"]
    deliveries = reg.deliveries("production")
    assert [(d.action, d.status, d.attempts, d.http_status) for d in deliveries] == [
        (a, "delivered", 1, 200) for a in ("promote", "promote", "rollback", "refused")
    ]
    assert [d.event_id for d in deliveries] == [p["event"] for p in told]
    assert [r.headers["x-memo-delivery"] for r in receiver.received] == [str(d.id) for d in deliveries]
    webhook_deliveries.notify(reg.ws.db, "production", 0.5)  # nothing left untold: nothing sent again
    assert len(receiver.received) == 4


def test_a_webhook_hears_only_of_moves_after_it_and_stops_when_removed(reg):
    first, second = _merges(reg)
    reg.promote(first, "production")
    with Receiver() as receiver:
        reg.set_webhooks("production", add=[receiver.url])
        reg.promote(second, "production")
        reg.set_webhooks("production", remove=[receiver.url])
        reg.rollback("production")
        assert reg.webhooks("production") == []
        reg.set_webhooks("production", add=[receiver.url])  # again: from now on, not the rollback it missed
        reg.promote(second, "production")
    assert [(r.payload["action"], r.payload["to"]) for r in receiver.received] == [
        ("promote", f"merge-{second}"),
        ("promote", f"merge-{second}"),
    ]
    assert "x-memo-signature-256" not in receiver.received[0].headers  # no secret: unsigned


def test_retries_until_delivered_and_a_refusing_receiver_is_not_retried(reg):
    first, second = _merges(reg)
    with Receiver("500", "503", "200") as flaky, Receiver("400") as refusing:
        reg.set_webhooks("production", add=[flaky.url, refusing.url])
        reg.promote(first, "production")
    by_url = {d.url: d for d in reg.deliveries("production")}
    assert (by_url[flaky.url].status, by_url[flaky.url].attempts, by_url[flaky.url].http_status) == (
        "delivered",
        3,
        200,
    )
    assert (by_url[refusing.url].status, by_url[refusing.url].attempts) == ("failed", 1)
    assert by_url[refusing.url].error.startswith("HTTP 400")
    assert len(flaky.received) == 3 and len(refusing.received) == 1
    assert len({r.body for r in flaky.received}) == 1  # every attempt sends the same message


def test_a_failing_and_a_hanging_receiver_never_block_or_undo_the_move(reg):
    first, second = _merges(reg)
    with Receiver("500") as failing, Receiver("hang", hang_s=30) as hanging:
        reg.set_webhooks("production", add=[failing.url, hanging.url])
        started = time.monotonic()
        event = reg.promote(first, "production")
        took = time.monotonic() - started
    assert event is not None and reg.get_channel("production").current_merge_id == first
    # Every attempt waits at most the timeout (0.5 s), the receivers in parallel: far from the 30 s hang.
    bound = ATTEMPTS * 0.5 + BACKOFF_S * (2 ** (ATTEMPTS - 1) - 1)
    assert took < bound + 5, took
    by_url = {d.url: d for d in reg.deliveries("production")}
    assert (by_url[failing.url].status, by_url[failing.url].attempts, by_url[failing.url].http_status) == (
        "failed",
        ATTEMPTS,
        500,
    )
    assert by_url[hanging.url].status == "failed" and "no answer within 0.5 s" in by_url[hanging.url].error
    assert len(failing.received) == ATTEMPTS
    assert [e.action for e in reg.log("production")][-1] == "promote"  # the move stands


def test_a_secret_not_set_where_the_channel_moves_sends_nothing(reg, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    (first,) = _merges(reg, 1)
    with Receiver() as receiver:
        reg.set_webhooks("production", add=[receiver.url], secret_env=SECRET_ENV)
        reg.promote(first, "production")
    assert receiver.received == []
    (delivery,) = reg.deliveries("production")
    assert delivery.status == "failed" and delivery.attempts == 0 and SECRET_ENV in delivery.error
    assert reg.get_channel("production").current_merge_id == first


def test_two_processes_telling_at_once_send_each_event_once(reg, registry_twin):
    (first,) = _merges(reg, 1)
    with Receiver("hang", hang_s=0.3) as receiver:
        reg.set_webhooks("production", add=[receiver.url])
        from registry.operations import channels

        channels.promote(reg.ws.db, first, "production")  # recorded, not told yet
        tellers = [
            threading.Thread(target=webhook_deliveries.notify, args=(r.ws.db, "production", 2.0))
            for r in (reg, registry_twin)
        ]
        for t in tellers:
            t.start()
        for t in tellers:
            t.join()
    assert len(receiver.received) == 1
    assert [(d.status, d.attempts) for d in reg.deliveries("production")] == [("delivered", 1)]


@pytest.fixture
def registry_twin(reg, database_url, blobs_url, tmp_path):
    """A second user of the same registry (another process would open it the same way)."""
    from registry import Registry

    if database_url:
        other = Registry.init(tmp_path / "other-home", database_url=database_url, blobs=blobs_url)
    else:
        other = Registry.open(reg.home)
    yield other
    other.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--webhook", "ftp://example.com/hook"), "a webhook is an http:// or https:// URL"),
        (("--webhook", "http:///no-host"), "a webhook is an http:// or https:// URL"),
        (("--webhook", "http://127.0.0.1:9/h", "--webhook-secret-env", "NOT-A-NAME"), "names an environment variable"),
        (("--no-webhook", "http://127.0.0.1:9/never-added"), "has no webhook"),
        (("--webhook", "http://127.0.0.1:9/h", "--min-retention", "1.5"), "between 0 and 1"),
    ],
)
def test_bad_webhook_settings_are_one_line_and_change_nothing(reg, args, message, database_url, blobs_url):
    reg.set_min_retention("production", 0.5)
    memo = Memo(reg.settings.home, database_url, blobs_url)
    before = registry_state(reg)
    result = memo("channel", "set", "production", *args, ok=False)
    assert_one_line_error(result, message)
    assert registry_state(reg) == before


def test_bad_input_through_the_api(reg, monkeypatch):
    with pytest.raises(InvalidInput):
        reg.set_webhooks("production", add=["not a url"])
    with pytest.raises(NotFound):
        reg.set_webhooks("nowhere", remove=["http://127.0.0.1:9/h"])
    monkeypatch.setenv("MEMO_WEBHOOK_TIMEOUT", "soon")
    (first,) = _merges(reg, 1)
    with pytest.raises(InvalidInput, match="MEMO_WEBHOOK_TIMEOUT"):
        reg.promote(first, "production")
    assert reg.list_channels() == []  # refused before anything moved


def test_the_cli_sets_lists_and_reports_deliveries(reg, monkeypatch, database_url, blobs_url):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    first, second = _merges(reg)
    memo = Memo(reg.settings.home, database_url, blobs_url)
    with Receiver() as good, Receiver("500") as bad:
        hooks = ("--webhook", good.url, "--webhook", bad.url, "--webhook-secret-env", SECRET_ENV)
        out = memo("channel", "set", "production", *hooks)
        assert "webhooks: 2" in out.stdout
        listed = json.loads(memo("channel", "webhooks", "production", "--json").stdout)
        assert [(h["url"], h["secret_env"]) for h in listed] == [(good.url, SECRET_ENV), (bad.url, SECRET_ENV)]
        moved = memo("promote", str(first), "--channel", "production")
        assert f"webhook {good.url}: delivered (HTTP 200)" in moved.stderr
        assert f"webhook {bad.url}: failed after {ATTEMPTS} attempts: HTTP 500" in moved.stderr
        assert "channel production: no merge -> merge-" in moved.stdout
        memo("channel", "set", "production", "--no-webhook", bad.url)
        memo("promote", str(second), "--channel", "production")
    table = memo("channel", "deliveries", "production").stdout
    assert "delivered (HTTP 200)" in table and "failed after" in table
    rows = json.loads(memo("channel", "deliveries", "production", "--json").stdout)
    assert [(r["url"], r["status"]) for r in rows] == [
        (good.url, "delivered"),
        (bad.url, "failed"),
        (good.url, "delivered"),
    ]
    assert len(bad.received) == ATTEMPTS and len(good.received) == 2
    assert all(_verified(r, SECRET) for r in good.received)
    log = memo("log", "production").stdout
    assert "webhook " in log and "removed" in log


def test_the_channel_page_shows_webhooks_and_deliveries(reg):
    from starlette.testclient import TestClient

    from registry.ui import create_app

    (first,) = _merges(reg, 1)
    with Receiver("400") as receiver:
        reg.set_webhooks("production", add=[receiver.url])
        reg.promote(first, "production")
    with TestClient(create_app(reg), base_url="http://localhost") as client:
        page = client.get("/channels/production").text
        data = client.get("/api/channels/production").json()
    assert receiver.url in page and "failed (HTTP 400): HTTP 400" in page and 'id="deliveries"' in page
    assert [h["url"] for h in data["webhooks"]] == [receiver.url]
    assert [(d["status"], d["http_status"]) for d in data["deliveries"]] == [("failed", 400)]
