"""Adapter registry: every trained adapter version with its data hashes, config and metrics, and which one serves.

A JSON document under ``$KEFU_HOME/registry.json``, rewritten atomically under a file lock. ``current`` is the
promoted version the server loads; ``history`` records every promotion so ``rollback`` can return to the previous
one. Adapters are copied into ``$KEFU_HOME/adapters/<version>/`` so a registered version never changes under us.

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

from kefu.artifacts.run import AdapterConfig
from kefu.paths import state_path
from kefu.safety import audit
from kefu.safety.keys import authorized
from kefu.types import KefuError

STATUSES = ("candidate", "promoted", "rejected", "retired")


class Registry:
    """Versions ``v1``, ``v2``, ... of one shop's adapter."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else state_path("registry.json")
        self.adapters_dir = self.path.parent / "adapters"

    # ---------------------------------------------------------------- storage
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
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
        raise KefuError(f"no model version {version!r} in {self.path}")

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
