"""Repo ids, Hub endpoints, out-of-range ids and database set-ups that once gave a traceback: each is
now one line, exit 1, and changes nothing; repo ids and endpoints are checked when they are stored."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from alembic import command
from registry import Registry
from registry.store.migrations import alembic_config
from registry.store.schema import ChannelRow
from registry.ui import create_app
from tests.conftest import Memo
from tests.support.cli import assert_one_line_error, unchanged

BAD_REPOS = ["rel/x\n", "x", "a/b/c", "org/--x", "org/" + "x" * 100, " org/x", "org/x y"]
BAD_ENDPOINTS = ["javascript:alert(1)", "ftp://hub.example", "http://user:pw@hub.example", "http://", "http://h/\n"]
HUGE = ["merge-99999999999999999999", "2147483648", "99999999999999999999"]


@pytest.fixture
def cli(trained) -> Memo:
    memo = Memo(trained.home, None)
    memo("merge", "--strategy", "ties", "harbor", "glassworks", "--channel", "production")
    return memo


@pytest.mark.parametrize("repo", BAD_REPOS)
def test_a_bad_repo_id_is_refused_before_anything_is_stored_or_sent(cli, repo):
    unchanged(cli, "publish", "production", "--repo", repo, "--endpoint", "http://127.0.0.1:9", fragments=["--repo"])
    unchanged(cli, "channel", "set", "production", "--repo", repo, fragments=["--repo"])


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS)
def test_a_bad_hub_endpoint_is_refused_when_stored(cli, endpoint):
    unchanged(cli, "channel", "set", "production", "--repo", "org/memory", "--endpoint", endpoint, fragments=["http"])
    unchanged(cli, "publish", "production", "--repo", "org/memory", "--endpoint", endpoint, fragments=["http"])


def test_a_channel_linked_to_a_bad_repo_by_an_older_memo_moves_nowhere(cli, trained):
    cli("merge", "--strategy", "ties", "harbor", "observatory", "--channel", "production")
    with trained.db.write() as session:  # what an older memo let `channel set` store
        session.execute(update(ChannelRow).values(hub_repo="rel/x\n", hub_endpoint="http://127.0.0.1:9"))
    unchanged(cli, "promote", "1", "--channel", "production", fragments=["--repo"])
    unchanged(cli, "rollback", "production", fragments=["--repo"])


@pytest.mark.parametrize("ref", HUGE)
def test_out_of_range_merge_ids_are_unknown_merges(memo, ref, tmp_path):
    """On SQLite and PostgreSQL (whose INTEGER ids stop at 2**31 - 1)."""
    unchanged(memo, "merge", "show", ref, fragments=["unknown merge"])
    unchanged(memo, "promote", ref, "--channel", "production", fragments=["unknown merge"])
    unchanged(memo, "export", ref, tmp_path / "out", fragments=[ref])


def test_out_of_range_versions_are_unknown(trained):
    cli = Memo(trained.home, None)
    assert_one_line_error(cli("eval", "harbor@v99999999999999999999", "--corpus", "harbor", ok=False), "no version")


def test_the_page_answers_out_of_range_ids_with_404(cli, trained):
    with TestClient(create_app(trained), base_url="http://localhost") as client:
        for path in ("/merges/99999999999999999999", "/api/merges/2147483648"):
            assert client.get(path).status_code == 404, path
        assert client.get("/retention?last=99999999999999999999").status_code == 400
        assert client.get("/merges/1").status_code == 200


def test_a_postgresql_url_without_its_driver_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as without the postgres extra
    memo = Memo(tmp_path / "home", "postgresql+psycopg://memo@127.0.0.1:9/memo")
    assert_one_line_error(memo("init", ok=False), "memo-registry[postgres]")
    assert_one_line_error(memo("base", "list", ok=False), "psycopg")


def test_an_older_schema_on_a_read_only_database_is_one_line(tmp_path):
    home = tmp_path / "home"
    with Registry.init(home) as reg:
        cfg = alembic_config()
        with reg.db.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
    read_only = f"sqlite:///file:{home / 'memo.db'}?mode=ro&uri=true"
    assert_one_line_error(Memo(home, read_only)("base", "list", ok=False), "'0004'", "memo db upgrade")
    assert_one_line_error(Memo(home, read_only)("db", "upgrade", ok=False), "could not be upgraded", "'0004'")
