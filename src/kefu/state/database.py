"""The schema of kefu's databases: SQLite files get their store's tables created as before; the shared PostgreSQL
database is created and upgraded by Alembic (``migrations/``), under an advisory lock so that replicas starting at
once migrate it exactly once.

Stores call :func:`ensure_schema` when they open an engine; deployments may run :func:`migrate` (``kefu state
migrate``) before starting replicas. Alembic is configured here in code, so the wheel needs no ``alembic.ini``, and
imported only when a PostgreSQL database is checked: SQLite users and light commands never pay its ~0.3 s import.
"""

from __future__ import annotations

import logging
import threading
import zlib
from pathlib import Path

from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import Connection, Engine

from kefu.state import database_url, is_shared
from kefu.types import KefuError

__all__ = ["MIGRATIONS", "VERSION_TABLE", "advisory_key", "engine", "ensure_schema", "head_revision", "current_revision",
           "migrate", "upgrade"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# kefu's own name for Alembic's bookkeeping table, so another application's Alembic in the same database is untouched
VERSION_TABLE = "kefu_alembic_version"

_migrated: set[str] = set()  # URLs this process has seen at head: one check per process and database
_migrated_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_ensured: set[tuple[str, int]] = set()  # (url, id(metadata)) whose tables this process has ensured
_engines_lock = threading.Lock()


def advisory_key(name: str) -> int:
    """A stable PostgreSQL advisory-lock key for ``name`` (``migrate``, ``registry``): one number per kefu lock."""
    return zlib.crc32(f"kefu:{name}".encode("utf-8"))


def _config(connection: Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, f"{MIGRATIONS}: no migration"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind ``connection`` is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine, revision: str | None = None) -> str:
    """Bring ``engine``'s PostgreSQL database to ``revision`` (default: head) in one transaction under an advisory
    lock: concurrent callers wait, then find it done. Returns the revision."""
    from alembic import command

    target = revision or head_revision()
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("migrate")})
        current = current_revision(conn)
        if current == target:
            return target
        if current is not None and current not in _revisions():
            # a newer kefu has migrated this database (a rolling upgrade); migrations only add, so run on it as it is
            log.warning("state database is at revision %s, newer than this kefu's %s: not migrating", current, target)
            return current
        command.upgrade(_config(conn), target)
    return target


def _revisions() -> set[str]:
    """Every revision this kefu knows."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def migrate(url: str | None = None, revision: str | None = None) -> str:
    """Create or upgrade the shared PostgreSQL database (default: the backend's, ``kefu.state.database_url``) to
    ``revision`` (default: the newest schema); safe to run again and from several processes at once. Returns the
    revision it is at."""
    if url is None and not is_shared():
        raise KefuError("the state backend is sqlite: each store creates its tables when it opens; migrations are "
                        "for the shared PostgreSQL database (state: backend: postgres)")
    url = url or database_url("migrate")
    engine = create_engine(url, future=True)
    try:
        if engine.dialect.name != "postgresql":
            raise KefuError(f"migrations are for the shared PostgreSQL database, not {engine.url.drivername}")
        reached = upgrade(engine, revision)
    finally:
        engine.dispose()
    if reached == head_revision():
        with _migrated_lock:
            _migrated.add(str(url))
    return reached


def ensure_schema(engine: Engine, metadata: MetaData) -> None:
    """Make sure a store's tables exist: ``create_all`` for SQLite (one file per store, as it always was), Alembic to
    head for PostgreSQL (every store's tables, once per process and database)."""
    if engine.dialect.name != "postgresql":
        metadata.create_all(engine)
        return
    url = engine.url.render_as_string(hide_password=False)
    with _migrated_lock:
        if url in _migrated:
            return
    upgrade(engine)
    with _migrated_lock:
        _migrated.add(url)


def engine(url: str, metadata: MetaData) -> Engine:
    """This process's engine for ``url`` (one connection pool per database, shared by the stores that live in it),
    with ``metadata``'s tables ensured (:func:`ensure_schema`) the first time a store asks."""
    with _engines_lock:
        found = _engines.get(url)
        if found is None:
            found = _engines[url] = create_engine(url, future=True, pool_pre_ping=True)
        if (url, id(metadata)) not in _ensured:
            ensure_schema(found, metadata)
            _ensured.add((url, id(metadata)))
    return found
