"""Adapter registry: every trained adapter version with its data hashes, config and metrics, and which one serves.

A JSON document under ``$KEFU_HOME/registry.json``, rewritten atomically under a file lock; with the postgres state
backend, tables ``registry_versions`` and ``registry_promotions`` of the shared database
(``kefu.state.database_url("registry")``), changed in one transaction under an advisory lock, so every replica sees
one registry. ``current`` is the promoted version the server loads; ``history`` records every promotion so
``rollback`` can return to the previous one. Adapters are copied into ``$KEFU_HOME/adapters/<version>/`` so a
registered version never changes under us (replicas on several machines need that folder on a shared volume).

Changing the registry (``register``, ``promote``, ``rollback``, ``set_status``) needs ``model:deploy``
(``kefu.safety.keys.authorize``), and the audit entries name that key. Gated retraining (``kefu.loop.retrain``,
authorised with ``model:train``) registers its candidate and promotes it only when the gate passes, through the
unchecked ``_register``/``_promote``/``_set_status``: there the gate, not a person, decides.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, Text, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from kefu import state
from kefu.artifacts.run import AdapterConfig
from kefu.paths import state_path
from kefu.safety import audit
from kefu.safety.keys import authorized
from kefu.state import database
from kefu.types import KefuError

STATUSES = ("candidate", "promoted", "rejected", "retired")

metadata = MetaData()
versions_table = Table(
    "registry_versions", metadata,
    Column("position", Integer, primary_key=True, autoincrement=False),  # 1 for v1, 2 for v2...
    Column("version", String(32), nullable=False, unique=True),
    Column("entry", JSON, nullable=False),  # the version's whole entry, as in registry.json
)
promotions_table = Table(
    "registry_promotions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # 1, 2, 3... in promotion order
    Column("time", String(40), nullable=False),
    Column("from_version", String(32), nullable=True),
    Column("to_version", String(32), nullable=False),
    Column("reason", Text, nullable=False),
)


class Registry:
    """Versions ``v1``, ``v2``, ... of one shop's adapter.

    ``Registry()`` follows the state backend (the JSON file, or the shared database with postgres);
    ``Registry(path)`` is the JSON file at ``path``."""

    def __init__(self, path: Path | None = None):
        shared = path is None and state.is_shared()
        self.path = None if shared else Path(path) if path else state_path("registry.json")
        self.engine: Engine | None = database.engine(state.database_url("registry"), metadata) if shared else None
        self.adapters_dir = self.path.parent / "adapters" if self.path else state_path("adapters")

    @property
    def where(self) -> str:
        """Where the registry lives, for messages."""
        if self.engine is not None:
            return self.engine.url.render_as_string(hide_password=True)
        return str(self.path)

    # ---------------------------------------------------------------- storage
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The registry document, written back when the block ends without an error; one writer at a time."""
        if self.engine is not None:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": database.advisory_key("registry")})
                doc = _read_rows(conn)
                stored = json.loads(json.dumps(doc))
                yield doc
                _write_rows(conn, stored, doc)
            return
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                doc = self._read()
                yield doc
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".registry.")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(doc, handle, ensure_ascii=False, indent=2)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        if self.engine is not None:
            with self.engine.connect() as conn:
                return _read_rows(conn)
        if not self.path.exists():
            return {"versions": [], "current": None, "history": []}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KefuError(f"{self.path}: registry is not valid JSON ({exc})") from exc

    # ---------------------------------------------------------------- queries
    def versions(self) -> list[dict[str, Any]]:
        return self._read()["versions"]

    def get(self, version: str) -> dict[str, Any]:
        for entry in self.versions():
            if entry["version"] == version:
                return entry
        raise KefuError(f"no model version {version!r} in {self.where}")

    def current(self) -> dict[str, Any] | None:
        doc = self._read()
        return next((v for v in doc["versions"] if v["version"] == doc["current"]), None)

    # ---------------------------------------------------------------- changes
    @authorized("model:deploy")
    def register(self, adapter: str | Path, *, base_model: str, metrics: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None, data_hashes: dict[str, str] | None = None,
                 parent: str | None = None, note: str = "") -> dict[str, Any]:
        """Copy ``adapter`` into the registry as a new candidate version and return its entry."""
        return self._register(adapter, base_model=base_model, metrics=metrics, config=config,
                              data_hashes=data_hashes, parent=parent, note=note)

    def _register(self, adapter: str | Path, *, base_model: str, metrics: dict[str, Any] | None = None,
                  config: dict[str, Any] | None = None, data_hashes: dict[str, str] | None = None,
                  parent: str | None = None, note: str = "") -> dict[str, Any]:
        adapter = AdapterConfig.read(adapter).folder  # KefuError unless a PEFT adapter folder
        with self._locked() as doc:
            version = f"v{len(doc['versions']) + 1}"
            target = self.adapters_dir / version
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(adapter, target)
            entry = {"version": version, "adapter": str(target), "base_model": base_model, "status": "candidate",
                     "created_at": datetime.now(timezone.utc).isoformat(), "parent": parent,
                     "metrics": metrics or {}, "config": config or {}, "data_hashes": data_hashes or {},
                     "note": note}
            doc["versions"].append(entry)
        audit.record("model.register", version, details={"adapter": str(adapter), "base_model": base_model})
        return entry

    @authorized("model:deploy")
    def set_status(self, version: str, status: str, reason: str = "") -> None:
        self._set_status(version, status, reason)

    def _set_status(self, version: str, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise KefuError(f"status must be one of {STATUSES}, not {status!r}")
        with self._locked() as doc:
            entry = _find(doc, version)
            entry["status"] = status
            if reason:
                entry["status_reason"] = reason

    @authorized("model:deploy")
    def promote(self, version: str, reason: str = "") -> dict[str, Any]:
        """Make ``version`` the serving adapter; the previous one is retired (and remembered for rollback)."""
        return self._promote(version, reason)

    def _promote(self, version: str, reason: str = "") -> dict[str, Any]:
        with self._locked() as doc:
            entry = _find(doc, version)
            if entry["status"] == "rejected" and not reason:
                raise KefuError(f"{version} was rejected by the gate; give a reason to promote it anyway")
            previous = doc["current"]
            if previous and previous != version:
                _find(doc, previous)["status"] = "retired"
            entry["status"] = "promoted"
            doc["current"] = version
            doc["history"].append({"time": datetime.now(timezone.utc).isoformat(), "from": previous,
                                   "to": version, "reason": reason})
        audit.record("model.promote", version, details={"from": previous, "reason": reason})
        return entry

    @authorized("model:deploy")
    def rollback(self) -> dict[str, Any]:
        """Return to the version that served before the current one."""
        doc = self._read()
        current = doc["current"]
        if current is None:
            raise KefuError("nothing is promoted yet: no rollback possible")
        previous = next((h["from"] for h in reversed(doc["history"]) if h["to"] == current and h["from"]), None)
        if previous is None:
            raise KefuError(f"{current} is the first promoted version: no earlier version to roll back to")
        entry = self._promote(previous, reason=f"rollback from {current}")
        self._set_status(current, "retired", reason="rolled back")
        return entry


def _find(doc: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in doc["versions"]:
        if entry["version"] == version:
            return entry
    raise KefuError(f"no model version {version!r} in the registry")


def _read_rows(conn: Connection) -> dict[str, Any]:
    """The registry document from the shared tables (``current`` is the last promotion's target)."""
    versions = [row.entry for row in conn.execute(select(versions_table.c.entry).order_by(versions_table.c.position))]
    history = [{"time": row.time, "from": row.from_version, "to": row.to_version, "reason": row.reason}
               for row in conn.execute(select(promotions_table).order_by(promotions_table.c.id))]
    return {"versions": versions, "current": history[-1]["to"] if history else None, "history": history}


def _write_rows(conn: Connection, stored: dict[str, Any], doc: dict[str, Any]) -> None:
    """Write what changed between ``stored`` (as read) and ``doc``: new and changed versions, new promotions."""
    for position, entry in enumerate(doc["versions"], start=1):
        if position > len(stored["versions"]):
            conn.execute(insert(versions_table).values(position=position, version=entry["version"], entry=entry))
        elif entry != stored["versions"][position - 1]:
            conn.execute(update(versions_table).where(versions_table.c.position == position).values(entry=entry))
    for number, promotion in enumerate(doc["history"][len(stored["history"]):], start=len(stored["history"]) + 1):
        conn.execute(insert(promotions_table).values(id=number, time=promotion["time"],
                                                     from_version=promotion["from"], to_version=promotion["to"],
                                                     reason=promotion["reason"]))
