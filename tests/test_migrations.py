"""Alembic is the schema's source of truth: models agree, migrations run once, safely."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from alembic import command
from registry import Registry
from registry.store.config import resolve_settings
from registry.store.database import Database, make_engine
from registry.store.errors import SchemaMismatch
from registry.store.home import create_home
from registry.store.migrations import alembic_config, head_revision
from registry.store.schema import Base
from tests.conftest import Memo, memo_subprocess_env


def test_models_and_migrations_agree(registry):
    with registry.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"ORM models and Alembic migrations disagree: {diff}"


def test_every_table_is_created(registry):
    tables = set(inspect(registry.db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_downgrade_then_upgrade(registry):
    cfg = alembic_config()
    with registry.db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(registry.db.engine).get_table_names()) <= {"alembic_version"}
    with registry.db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert set(Base.metadata.tables) <= set(inspect(registry.db.engine).get_table_names())


def test_the_gate_refusals_migration_keeps_the_history_append_only(registry):
    registry.set_min_retention("production", 0.5)
    registry.set_min_retention("production", 0.7)
    before = [e.to_json() for e in registry.log("production")]
    cfg = alembic_config()
    for target in ("0003", "head"):  # SQLite rebuilds the table both ways
        with registry.db.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, target) if target != "head" else command.upgrade(cfg, target)
    assert [e.to_json() for e in registry.log("production")] == before
    with pytest.raises(DBAPIError, match="append-only"), registry.db.write() as session:
        session.execute(text("UPDATE channel_event SET reason = 'rewritten'"))
    with pytest.raises(DBAPIError, match="action_known"), registry.db.write() as session:
        session.execute(
            text(
                "INSERT INTO channel_event (channel_id, action, reason, forced, created_at) "
                "VALUES (1, 'vanished', '', false, CURRENT_TIMESTAMP)"
            )
        )


def test_newer_schema_is_refused_naming_the_memo_to_install(registry, memo):
    with registry.db.write() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        session.execute(text("UPDATE schema_info SET value = '9.9.9' WHERE key = 'memo_version'"))
    with pytest.raises(SchemaMismatch, match=r"migrated by memo 9\.9\.9 or newer"):
        Registry.open(registry.settings.home, database_url=memo.database_url)
    result = memo("corpus", "list", ok=False)
    assert result.exit_code == 1 and "pip install 'memo-registry>=9.9.9'" in result.stderr
    assert "9999_from_the_future" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _one_revision_behind(reg: Registry) -> str:
    cfg = alembic_config()
    with reg.db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    with reg.db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_a_shared_database_is_migrated_only_by_memo_db_upgrade(tmp_path, database_url):
    """On PostgreSQL, and on a SQLite file given by URL (shared): an older schema is one line naming
    `memo db upgrade`, which migrates it; then every command works again."""
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    memo = Memo(tmp_path / "home", url)
    memo("init")
    with Registry.open(memo.home, database_url=url) as reg:
        behind = _one_revision_behind(reg)
    result = memo("corpus", "list", ok=False)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"schema revision {behind!r}" in result.stderr and "`memo db upgrade`" in result.stderr
    assert f"revision {behind}" in memo("db", "status").stdout
    assert json.loads(memo("db", "status", "--json").stdout) == {
        "database": behind,
        "memo": head_revision(),
        "up_to_date": False,
    }
    assert f"from schema revision {behind} to {head_revision()}" in memo("db", "upgrade").stdout
    assert memo("corpus", "list", "--json").stdout.strip() == "[]"
    assert "already at schema revision" in memo("db", "upgrade").stdout


def test_a_home_s_own_sqlite_upgrades_itself(tmp_path):
    memo = Memo(tmp_path / "home", None)
    memo("init")
    with Registry.open(memo.home) as reg:
        _one_revision_behind(reg)
    assert memo("corpus", "list", "--json").stdout.strip() == "[]"
    assert json.loads(memo("db", "status", "--json").stdout)["up_to_date"] is True


def test_concurrent_first_start_migrates_once(tmp_path, database_url):
    """Six `memo` processes starting at once on an unmigrated database all succeed."""
    home = tmp_path / "race-home"
    create_home(home)  # a home whose database has never been migrated
    env = memo_subprocess_env(home, database_url)
    memo = str(Path(env["PATH"].split(":")[0]) / "memo")
    procs = [
        subprocess.Popen(
            [memo, "corpus", "list", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [r for r in results if r[0] != 0]
    db = Database(make_engine(resolve_settings(home, database_url).database_url))
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == (head_revision(),)
    db.dispose()
