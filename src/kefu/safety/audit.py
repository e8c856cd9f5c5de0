"""Tamper-evident audit log: append-only JSON lines under ``$KEFU_HOME/audit.log`` (or, with the postgres state
backend, rows of the shared database), each entry hash-chained.

Every entry carries ``prev`` (the previous entry's digest) and ``digest`` (sha256 of its own canonical JSON,
``prev`` included), so editing, inserting or deleting any entry breaks the chain at that point.

Deleting the *tail* leaves a valid shorter chain, so each append also rewrites an anchor, ``audit.head`` next to the
log (``{"count": N, "digest": <last digest>}``, written atomically under the log's lock). ``verify`` compares the log
with the anchor: fewer entries than anchored means truncation; more means entries appended behind ``record``'s back.
For protection against someone who can rewrite both files, ship the head digest elsewhere (``kefu audit verify``
prints it) — a chain can only be checked against a digest kept out of the attacker's reach.

With the postgres backend (``kefu.state``) every replica appends to one chain: table ``audit_log`` holds each entry's
canonical JSON under its position ``seq``, and the one row of ``audit_head`` is the anchor. An append locks that row
(``SELECT ... FOR UPDATE``), links to the digest it holds and moves it on in the same transaction, so concurrent
writers from any number of processes are serialised and the chain never forks. ``path=`` still names a file log.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Engine

from kefu import state
from kefu.paths import state_path
from kefu.state import database
from kefu.types import KefuError

GENESIS = "0" * 64
HEAD_ROW = 1  # the id of audit_head's one row

metadata = MetaData()
log_table = Table(
    "audit_log", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # 1, 2, 3... in chain order
    Column("digest", String(64), nullable=False),
    Column("entry", Text, nullable=False),  # the entry's canonical JSON, exactly the text that was hashed
)
head_table = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
)


def _shared_engine() -> Engine | None:
    """The shared database when the state backend is postgres, else None (the log is the local file)."""
    return database.engine(state.database_url("audit"), metadata) if state.is_shared() else None


def audit_path() -> Path:
    return state_path("audit.log")


def head_path(path: Path | None = None) -> Path:
    """The anchor file of a log: ``audit.log`` -> ``audit.head``."""
    return (path or audit_path()).with_suffix(".head")


def read_head(path: Path | None = None) -> dict[str, Any] | None:
    """The anchor ``{"count", "digest"}``, or None when there is none (a log from before anchors, or no log)."""
    head = head_path(path)
    if not head.exists():
        return None
    try:
        data = json.loads(head.read_text(encoding="utf-8"))
        return {"count": int(data["count"]), "digest": str(data["digest"])}
    except (ValueError, KeyError, TypeError):
        return {"count": -1, "digest": "unreadable"}


def _write_head(path: Path, count: int, digest: str) -> None:
    head = head_path(path)
    tmp = head.with_suffix(".head.tmp")
    tmp.write_text(json.dumps({"count": count, "digest": digest}), encoding="utf-8")
    os.replace(tmp, head)


def _count_lines(handle) -> int:
    handle.seek(0)
    return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


# Who the code running in this context acts for (``keys.acting_as`` sets it after authorising a key); a ContextVar,
# so each thread / asyncio task / request has its own and nothing leaks into the process environment.
_acting_actor: ContextVar[str | None] = ContextVar("kefu_audit_actor", default=None)


@contextmanager
def acting(actor: str | None) -> Iterator[None]:
    """Make ``actor`` the default actor of every entry recorded inside this block (in this context only)."""
    token = _acting_actor.set(actor)
    try:
        yield
    finally:
        _acting_actor.reset(token)


def default_actor() -> str:
    """Who is acting: the actor set by ``acting``/``keys.acting_as`` for this context (an authorised key), else
    ``$KEFU_ACTOR`` (older callers), else the OS user."""
    return _acting_actor.get() or os.environ.get("KEFU_ACTOR") or f"user:{getpass.getuser()}"


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


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-JSON values become strings, lone surrogates (undecodable input) become U+FFFD, so a
    strange object name can never make an audited action crash."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return json.loads(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


def record(action: str, object: str, *, actor: str | None = None, details: dict[str, Any] | None = None,
           digest: str | None = None, path: Path | None = None) -> dict[str, Any]:
    """Append one entry and return it. ``digest`` is the sha256 of the data touched, when there is one."""
    shared = _shared_engine() if path is None else None
    if shared is not None:
        return _record_shared(shared, action, object, actor=actor, details=details, digest=digest)
    path = path or audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            entry = _linked_entry(_last_digest(handle), action, object, actor, details, digest)
            handle.seek(0, os.SEEK_END)
            handle.write((_line(entry) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            head = read_head(path)
            count = head["count"] + 1 if head and head["count"] >= 0 else _count_lines(handle)
            _write_head(path, count, entry["digest"])
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return entry


def _linked_entry(prev: str, action: str, object: str, actor: str | None, details: dict[str, Any] | None,
                  digest: str | None) -> dict[str, Any]:
    """One new entry, linked to the chain's last digest ``prev`` and sealed with its own digest."""
    entry = _clean({
        "time": datetime.now(timezone.utc).isoformat(),
        "actor": actor or default_actor(),
        "action": action,
        "object": object,
        "data_digest": digest,
        "details": details or {},
    })
    entry["prev"] = prev
    entry["digest"] = _digest(entry)
    return entry


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, sort_keys=True)


def _record_shared(engine: Engine, action: str, object: str, *, actor: str | None, details: dict[str, Any] | None,
                   digest: str | None) -> dict[str, Any]:
    """Append to the shared chain: lock the head row, link to it, insert, move the head — one transaction."""
    with engine.begin() as conn:
        head = conn.execute(select(head_table.c.count, head_table.c.digest)
                            .where(head_table.c.id == HEAD_ROW).with_for_update()).first()
        if head is None:
            raise KefuError("the audit log's head row (audit_head) is missing: the log was tampered with; run "
                            "`kefu audit verify`")
        entry = _linked_entry(head.digest, action, object, actor, details, digest)
        conn.execute(insert(log_table).values(seq=head.count + 1, digest=entry["digest"], entry=_line(entry)))
        conn.execute(update(head_table).where(head_table.c.id == HEAD_ROW)
                     .values(count=head.count + 1, digest=entry["digest"]))
    return entry


def _shared_rows(engine: Engine) -> Iterator[tuple[int, str]]:
    """(seq, entry JSON) of the shared log in chain order, streamed."""
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(
            select(log_table.c.seq, log_table.c.entry).order_by(log_table.c.seq))
        for seq, text in result:
            yield int(seq), text


def location() -> str:
    """Where the log in force lives, for people: the file, or the shared database's table (password hidden)."""
    if state.is_shared():
        url = _shared_engine().url.render_as_string(hide_password=True)  # type: ignore[union-attr]
        return f"{url} (table audit_log)"
    return str(audit_path())


def entries(path: Path | None = None) -> Iterator[dict[str, Any]]:
    shared = _shared_engine() if path is None else None
    if shared is not None:
        for _seq, text in _shared_rows(shared):
            yield json.loads(text)
        return
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
    head: str | None = None  # the last digest, to copy somewhere safe


def verify(path: Path | None = None) -> VerifyResult:
    """Walk the chain; report the first line whose digest or link does not hold."""
    shared = _shared_engine() if path is None else None
    if shared is not None:
        return _verify_shared(shared)
    path = path or audit_path()
    prev = GENESIS
    count = 0
    if not path.exists():
        return VerifyResult(True, 0)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            count = number
            prev, problem = _next_link(line, prev)
            if problem:
                return VerifyResult(False, number, number, problem)
    head = read_head(path)
    if head is None:
        if count:
            return VerifyResult(False, count, None, f"anchor {head_path(path).name} missing: cannot rule out a truncated tail")
        return VerifyResult(True, count)
    if head["count"] < 0:
        return VerifyResult(False, count, None, f"anchor {head_path(path).name} unreadable")
    if count < head["count"]:
        return VerifyResult(False, count, count + 1,
                            f"log truncated: {head_path(path).name} anchors {head['count']} entries, log has {count}")
    if count > head["count"]:
        return VerifyResult(False, count, head["count"] + 1,
                            f"entries after line {head['count']} are not anchored by {head_path(path).name} "
                            "(appended outside kefu)")
    if head["digest"] != prev:
        return VerifyResult(False, count, count, f"last digest differs from {head_path(path).name} (tail replaced)")
    return VerifyResult(True, count, head=prev)


def _next_link(text: str, prev: str) -> tuple[str, str | None]:
    """One stored entry checked against the chain so far: (its digest, what is wrong with it or None)."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError:
        return prev, "not valid JSON"
    if entry.get("prev") != prev:
        return prev, "link to the previous entry broken (inserted or deleted)"
    if _digest(entry) != entry.get("digest"):
        return prev, "digest mismatch (entry edited)"
    return entry["digest"], None


def _verify_shared(engine: Engine) -> VerifyResult:
    """The shared chain: positions 1..N without gaps, every link and digest, and the head row equal to the tail."""
    prev, count = GENESIS, 0
    for seq, text in _shared_rows(engine):
        count += 1
        if seq != count:
            return VerifyResult(False, count, count, f"entry {count} missing (next stored is {seq}: deleted)")
        prev, problem = _next_link(text, prev)
        if problem:
            return VerifyResult(False, count, count, problem)
    with engine.connect() as conn:
        head = conn.execute(select(head_table.c.count, head_table.c.digest).where(head_table.c.id == HEAD_ROW)).first()
    if head is None:
        return VerifyResult(False, count, None, "head row (audit_head) missing: cannot rule out a truncated tail")
    if count < head.count:
        return VerifyResult(False, count, count + 1, f"log truncated: audit_head anchors {head.count} entries, "
                                                     f"audit_log has {count}")
    if count > head.count:
        return VerifyResult(False, count, head.count + 1, f"entries after {head.count} are not anchored by "
                                                          "audit_head (written outside kefu)")
    if head.digest != prev:
        return VerifyResult(False, count, count, "last digest differs from audit_head (tail replaced)")
    return VerifyResult(True, count, head=prev if count else None)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def _parse_time(value: str | datetime | None, field_name: str) -> datetime | None:
    """ISO date/time; a naive value is read as UTC so comparisons stay timezone-aware."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise KefuError(f"--{field_name}: {value!r} is not an ISO date or time (e.g. 2026-11-01 or "
                            "2026-11-01T08:00:00+08:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def search(*, actor: str | None = None, action: str | None = None, object: str | None = None,
           since: str | datetime | None = None, until: str | datetime | None = None,
           path: Path | None = None) -> list[dict[str, Any]]:
    """Entries matching every given filter: ``actor``/``object`` are substrings, ``action`` an exact name or a
    prefix ending in '.' (``keys.`` = all key actions), ``since``/``until`` inclusive bounds on the entry time."""
    lo, hi = _parse_time(since, "since"), _parse_time(until, "until")
    out = []
    for entry in entries(path):
        if actor and actor not in str(entry.get("actor", "")):
            continue
        if action and not (entry.get("action") == action or (action.endswith(".") and
                                                               str(entry.get("action", "")).startswith(action))):
            continue
        if object and object not in str(entry.get("object", "")):
            continue
        if lo or hi:
            when = _parse_time(entry.get("time"), "time")
            if (lo and when < lo) or (hi and when > hi):
                continue
        out.append(entry)
    return out
