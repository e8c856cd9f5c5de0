"""Shared record types passed between stages.

Plain dataclasses (not Pydantic) because the prepare stage builds millions of them and must stay fast;
Pydantic models guard the edges (config files, HTTP requests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(slots=True)
class Turn:
    """One message. ``user`` is the customer, ``assistant`` the agent (human or model)."""

    role: str
    content: str


@dataclass(slots=True)
class Entity:
    """An e-commerce entity found in a turn: ``type`` is one of ``kefu.data.annotate.ENTITY_TYPES``."""

    type: str
    text: str
    turn: int
    start: int
    end: int
    value: str | None = None  # normalised value, e.g. price in fen, canonical colour


@dataclass(slots=True)
class Dialogue:
    """A whole conversation plus where it came from and what we learned about it.

    ``meta`` keys used across stages: ``source`` (file), ``line`` (first line/row), ``tier`` (1 base, 2 annotated,
    3 simulated/adversarial), ``intents`` (one per user turn), ``entities`` (list of Entity dicts),
    ``pii_counts`` (placeholder -> count), ``facts`` (knowledge-graph facts the dialogue needed), ``split``.
    """

    id: str
    messages: list[Turn]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": [{"role": t.role, "content": t.content} for t in self.messages],
                "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Dialogue":
        return cls(id=str(data.get("id", "")), messages=[Turn(m["role"], m["content"]) for m in data["messages"]],
                   meta=dict(data.get("meta") or {}))


@dataclass(slots=True)
class Reject:
    """A record that could not be used, with the reason; written to ``rejects.jsonl`` so nothing is lost."""

    file: str
    line: int | None
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KefuError(Exception):
    """A user-facing error: bad input or configuration. The CLI prints its message and exits non-zero."""
