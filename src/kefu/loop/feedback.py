"""Feedback store: ratings, corrections and handoff outcomes, with the (PII-masked) conversation they belong to.

Table ``feedback`` of ``kefu.state.database_url("feedback")``: SQLite under ``$KEFU_HOME/feedback.db`` by default
(WAL journal, ``synchronous=FULL`` so an acknowledged write is on disk before ``add`` returns and survives a crash),
the shared PostgreSQL database with the postgres backend (its schema kept by Alembic; a commit there is durable when
it returns), or any SQLAlchemy URL given to ``open``. The loop stage reads it back with ``list`` to build the next
training round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import (JSON, Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, event, insert,
                        select)
from sqlalchemy.engine import Engine

from kefu import state
from kefu.state import database
from kefu.text.pii import mask
from kefu.types import KefuError

KINDS = ("rating", "correction", "handoff")
HANDOFF_OUTCOMES = ("resolved", "unresolved", "abandoned", "escalated")

metadata = MetaData()
feedback_table = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("session_id", String(128), index=True),
    Column("message_id", String(128)),
    Column("model", String(128)),
    Column("rating", Integer),
    Column("correction", Text),
    Column("outcome", String(32)),
    Column("comment", Text),
    Column("source", String(16)),  # api | web | cli
    Column("conversation", JSON),  # [{"role", "content"}], masked
    Column("meta", JSON),
)


def mask_text(text: str) -> str:
    """PII-masked copy of ``text`` (``kefu.text.pii.mask``: names, addresses and validated numbers alike)."""
    return mask(text)[0]


@dataclass
class FeedbackRecord:
    """One piece of feedback. ``rating``: -1 (bad) / 1 (good), or 1..5 stars."""

    kind: str
    session_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    rating: int | None = None
    correction: str | None = None
    outcome: str | None = None
    comment: str | None = None
    source: str = "api"
    conversation: list[dict[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    created_at: datetime | None = None

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise KefuError(f"feedback.kind: must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "rating" and (self.rating is None or not (-1 <= self.rating <= 5) or self.rating == 0):
            raise KefuError("feedback.rating: a rating needs -1, 1 (thumbs) or 1..5 (stars)")
        if self.kind == "correction" and not (self.correction or "").strip():
            raise KefuError("feedback.correction: a correction needs the corrected answer text")
        if self.kind == "handoff" and self.outcome not in HANDOFF_OUTCOMES:
            raise KefuError(f"feedback.outcome: a handoff outcome is one of {', '.join(HANDOFF_OUTCOMES)}")


def default_url() -> str:
    """The feedback store of the state backend in force."""
    return state.database_url("feedback")


class FeedbackStore:
    """Durable feedback rows. Text is masked before it is written; callers may pass raw text."""

    def __init__(self, engine: Engine):
        self.engine = engine
        database.ensure_schema(engine, metadata)

    @classmethod
    def open(cls, url: str | None = None) -> "FeedbackStore":
        """Open (creating if needed) the store at ``url`` (default: the backend's, ``default_url``)."""
        url = url or default_url()
        engine = create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # durability: WAL + fsync on every commit
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()
        return cls(engine)

    def add(self, record: FeedbackRecord | dict[str, Any]) -> int:
        """Validate, mask and commit one record; returns its id only after the commit is durable."""
        if isinstance(record, dict):
            known = {k: v for k, v in record.items() if k in FeedbackRecord.__dataclass_fields__}
            record = FeedbackRecord(**known)
        record.validate()
        row = asdict(record)
        row.pop("id")
        row["created_at"] = (record.created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        for key in ("correction", "comment"):
            if row[key]:
                row[key] = mask_text(row[key])
        row["conversation"] = [{"role": str(m.get("role", "")), "content": mask_text(str(m.get("content", "")))}
                               for m in (record.conversation or [])]
        with self.engine.begin() as conn:
            result = conn.execute(insert(feedback_table).values(**row))
            return int(result.inserted_primary_key[0])

    def list(self, since: datetime | None = None, *, kind: str | None = None, session_id: str | None = None,
             limit: int | None = None) -> list[FeedbackRecord]:
        """Records oldest first, optionally only those created at/after ``since`` (timezone-aware)."""
        query = select(feedback_table).order_by(feedback_table.c.id)
        if since is not None:
            if since.tzinfo is None:
                raise KefuError("feedback.list(since=...): pass a timezone-aware datetime")
            query = query.where(feedback_table.c.created_at >= since.astimezone(timezone.utc))
        if kind:
            query = query.where(feedback_table.c.kind == kind)
        if session_id:
            query = query.where(feedback_table.c.session_id == session_id)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for row in rows:
            data = dict(row)
            created = data.get("created_at")
            if created is not None and created.tzinfo is None:  # SQLite drops the offset; we always store UTC
                data["created_at"] = created.replace(tzinfo=timezone.utc)
            data["conversation"] = data.get("conversation") or []
            data["meta"] = data.get("meta") or {}
            out.append(FeedbackRecord(**data))
        return out

    def ids(self) -> set[int]:
        with self.engine.connect() as conn:
            return {int(r[0]) for r in conn.execute(select(feedback_table.c.id))}

    def close(self) -> None:
        self.engine.dispose()


def export_jsonl(store: FeedbackStore, since: datetime | None = None) -> Iterable[str]:
    """One JSON line per record (for the loop stage and for people)."""
    for rec in store.list(since):
        data = asdict(rec)
        data["created_at"] = rec.created_at.isoformat() if rec.created_at else None
        yield json.dumps(data, ensure_ascii=False)
