"""Tamper-evident audit log: append-only JSON lines under ``$KEFU_HOME/audit.log``, each entry hash-chained.

Every entry carries ``prev`` (the previous entry's digest) and ``digest`` (sha256 of its own canonical JSON,
``prev`` included), so editing, inserting or deleting any entry breaks the chain at that point.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from kefu.paths import state_path

GENESIS = "0" * 64


def audit_path() -> Path:
    return state_path("audit.log")


def default_actor() -> str:
    """Who is acting: ``$KEFU_ACTOR`` when set (services set it per request), else the OS user."""
    return os.environ.get("KEFU_ACTOR") or f"user:{getpass.getuser()}"


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _last_digest(handle) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return GENESIS
    block = min(size, 65536)
    while True:
        handle.seek(size - block)
        tail = handle.read(block).rstrip(b"\n")
        if b"\n" in tail or block == size:
            last = tail.rsplit(b"\n", 1)[-1]
            return json.loads(last.decode("utf-8"))["digest"]
        block = min(size, block * 2)


def record(action: str, object: str, *, actor: str | None = None, details: dict[str, Any] | None = None,
           digest: str | None = None, path: Path | None = None) -> dict[str, Any]:
    """Append one entry and return it. ``digest`` is the sha256 of the data touched, when there is one."""
    path = path or audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            entry = {
                "time": datetime.now(timezone.utc).isoformat(),
                "actor": actor or default_actor(),
                "action": action,
                "object": object,
                "data_digest": digest,
                "details": details or {},
                "prev": _last_digest(handle),
            }
            entry["digest"] = _digest(entry)
            handle.seek(0, os.SEEK_END)
            handle.write((json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return entry


def entries(path: Path | None = None) -> Iterator[dict[str, Any]]:
    path = path or audit_path()
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad: int | None = None  # 1-based line number
    reason: str = ""


def verify(path: Path | None = None) -> VerifyResult:
    """Walk the chain; report the first line whose digest or link does not hold."""
    path = path or audit_path()
    prev = GENESIS
    count = 0
    if not path.exists():
        return VerifyResult(True, 0)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            count = number
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return VerifyResult(False, number, number, "not valid JSON")
            if entry.get("prev") != prev:
                return VerifyResult(False, number, number, "link to the previous entry broken (inserted or deleted)")
            if _digest(entry) != entry.get("digest"):
                return VerifyResult(False, number, number, "digest mismatch (entry edited)")
            prev = entry["digest"]
    return VerifyResult(True, count)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()
