"""Facts for one customer turn: link entities (products, orders, tracking numbers, colours, sizes, categories) and
gather what the model needs to answer truthfully — as structured facts, as a short Chinese prompt block, and, when one
fact fully answers a simple question, as a direct grounded reply (the light path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kefu.kg.store import KnowledgeGraph


@dataclass
class Facts:
    """``entities``: what was linked (type, text, start, end, value); ``facts``: dicts with ``type``, ``subject``,
    ``text`` (one Chinese line) and ``data``; ``prompt_block``: the facts for the system prompt; ``answer``: a direct,
    fully grounded reply when one fact answers the turn (price, return window, order status, FAQ), else None."""

    entities: list[dict] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)
    prompt_block: str = ""
    answer: str | None = None


def retrieve(kg: KnowledgeGraph, text: str, *, customer_id: str | None = None, at: datetime | None = None) -> Facts:
    """Facts relevant to ``text``. Orders are shown only when ``customer_id`` owns them; ``at`` defaults to now."""
    raise NotImplementedError
