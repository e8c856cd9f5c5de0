"""The shared database's schema: Alembic creates exactly the tables the stores declare, once, however many processes
start at the same moment; the stores' tables never share a name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from typer.testing import CliRunner

from kefu.cli import app
from kefu.kg import store as kg_store
from kefu.loop import feedback, registry
from kefu.safety import audit, consent, keys
from kefu.state import database
from kefu.types import KefuError

STORE_METADATA = {"keys": keys._metadata, "consent": consent._metadata, "audit": audit.metadata,
                  "feedback": feedback.metadata, "registry": registry.metadata, "kg": kg_store.Base.metadata}


def _all_tables() -> MetaData:
    combined = MetaData()
    for metadata in STORE_METADATA.values():
        for table in metadata.tables.values():
            table.to_metadata(combined)
    return combined


def test_no_two_stores_declare_a_table_of_the_same_name():
    owners: dict[str, list[str]] = {}
    for store, metadata in STORE_METADATA.items():
        for name in metadata.tables:
            owners.setdefault(name, []).append(store)
    assert {name: stores for name, stores in owners.items() if len(stores) > 1} == {}
    assert database.VERSION_TABLE not in owners


def test_the_migrations_create_exactly_the_tables_the_stores_declare(postgres_url):
    assert database.migrate(postgres_url) == database.head_revision()
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": database.VERSION_TABLE})
        assert compare_metadata(context, _all_tables()) == []
        assert set(inspect(conn).get_table_names()) == set(_all_tables().tables) | {database.VERSION_TABLE}
        assert conn.execute(text("SELECT id, count FROM audit_head")).all() == [(1, 0)]
    engine.dispose()


def test_migrating_again_changes_nothing(postgres_url):
    database.migrate(postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO kg_meta (key, value) VALUES ('probe', 'kept')"))
    assert database.migrate(postgres_url) == database.head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM kg_meta WHERE key = 'probe'")).scalar() == "kept"
        assert conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
        assert conn.execute(text(f"SELECT version_num FROM {database.VERSION_TABLE}")).scalars().all() == [
            database.head_revision()]
    engine.dispose()


def test_a_database_at_the_first_revision_upgrades_to_head_keeping_its_rows(postgres_url):
    assert database.migrate(postgres_url, "0001_initial") == "0001_initial"
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        assert "api_key_settings" not in inspect(conn).get_table_names()
        conn.execute(text("INSERT INTO api_keys (key_id, name, role, digest, created_at, created_by) "
                          "VALUES ('k1', 'old', 'admin', 'd', 'now', 'test')"))
    assert database.migrate(postgres_url) == database.head_revision() != "0001_initial"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM api_keys")).scalars().all() == ["old"]
        assert "api_key_settings" in inspect(conn).get_table_names()
        assert database.current_revision(conn) == database.head_revision()
    engine.dispose()


def test_a_database_migrated_by_a_newer_kefu_is_used_as_it_is(postgres_url):
    database.migrate(postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {database.VERSION_TABLE} SET version_num = '9999_from_a_newer_kefu'"))
    assert database.migrate(postgres_url) == "9999_from_a_newer_kefu"  # no downgrade, no error: a rolling upgrade
    store = feedback.FeedbackStore.open(postgres_url)
    try:
        assert store.list() == [] and store.add({"kind": "rating", "rating": 1}) == 1
    finally:
        store.close()
    with engine.connect() as conn:
        assert database.current_revision(conn) == "9999_from_a_newer_kefu"
    engine.dispose()


def test_two_processes_migrating_at_once_both_succeed_and_migrate_once(postgres_url, tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, time
        from kefu.state import database
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        print(database.migrate({postgres_url!r}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    time.sleep(2)
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == database.head_revision()
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1  # seeded once, not twice
        assert conn.execute(text(f"SELECT count(*) FROM {database.VERSION_TABLE}")).scalar() == 1
    engine.dispose()


def test_opening_a_store_on_postgres_migrates_the_database(shared_state, postgres_url):
    store = feedback.FeedbackStore.open()
    try:
        assert store.engine.dialect.name == "postgresql"
        with store.engine.connect() as conn:
            assert database.current_revision(conn) == database.head_revision()
            assert set(_all_tables().tables) <= set(inspect(conn).get_table_names())
    finally:
        store.close()


def test_migrate_refuses_the_sqlite_backend(monkeypatch, tmp_path):
    for name in ("KEFU_STATE_BACKEND", "KEFU_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KefuError, match="sqlite"):
        database.migrate()
    with pytest.raises(KefuError, match="PostgreSQL"):
        database.migrate(f"sqlite:///{tmp_path / 'x.db'}")


def test_kefu_state_migrate_brings_the_configured_database_to_head(shared_state, postgres_url):
    result = CliRunner().invoke(app, ["state", "migrate"])
    assert result.exit_code == 0, result.output
    assert database.head_revision() in result.output
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert database.current_revision(conn) == database.head_revision()
    engine.dispose()
