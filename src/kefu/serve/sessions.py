"""Multi-turn state per (API key, customer, session id): masked history, intents, entities, failures; bounded LRU.

Sessions are made by the server (``SessionStore.create``: a random, unguessable id the API returns to the client)
and bound to the key and the customer they were made for; a client continues one only by sending its id with the
same key and customer (``find``; the HTTP API answers 404 otherwise). Sessions of different keys, customers or ids
never see each other's turns. A handoff to a human carries a rule-based summary
(intents seen, entities mentioned, the last question) so the agent does not have to reread the chat.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kefu.data.taxonomy import INTENTS


@dataclass
class Session:
    id: str
    owner: str  # API key id (principal); isolation boundary
    customer_id: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)  # masked {"role","content"}
    intents: list[str] = field(default_factory=list)
    entities: dict[str, list[str]] = field(default_factory=dict)  # type -> values (order_no kept for tools)
    failures: int = 0
    handed_off: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_turn(self, role: str, content: str, max_turns: int) -> None:
        self.turns.append({"role": role, "content": content})
        if len(self.turns) > max_turns:
            del self.turns[: len(self.turns) - max_turns]

    def remember(self, kind: str, values: list[str] | tuple[str, ...]) -> None:
        bucket = self.entities.setdefault(kind, [])
        for v in values:
            if v in bucket:
                bucket.remove(v)
            bucket.append(v)
        del bucket[:-10]

    def last(self, kind: str) -> str | None:
        values = self.entities.get(kind) or []
        return values[-1] if values else None

    def summary(self) -> dict[str, Any]:
        """Rule-based handoff summary: intents (with Chinese names), entities, last customer question."""
        last_q = next((t["content"] for t in reversed(self.turns) if t["role"] == "user"), "")
        names = [f"{i}（{INTENTS[i][0]}）" if i in INTENTS else i for i in dict.fromkeys(self.intents)]
        ents = {k: v for k, v in self.entities.items() if v}
        lines = [f"意图：{'、'.join(names) or '未识别'}"]
        if ents:
            lines.append("实体：" + "；".join(f"{k}={','.join(v)}" for k, v in ents.items()))
        lines.append(f"最后问题：{last_q}")
        lines.append(f"轮数：{sum(1 for t in self.turns if t['role'] == 'user')}，未解决次数：{self.failures}")
        return {"intents": list(dict.fromkeys(self.intents)), "entities": ents, "last_question": last_q,
                "turns": len(self.turns), "failures": self.failures, "text": "\n".join(lines)}


SESSION_PREFIX = "sess_"


def new_session_id() -> str:
    """A fresh session id: 192 random bits, URL-safe (it travels in a header and in JSON)."""
    return SESSION_PREFIX + secrets.token_urlsafe(24)


class SessionStore:
    """At most ``max_sessions`` live sessions (least recently used dropped first), idle ones expire.

    A session is keyed by (API key, customer id, session id): another key or another customer never reaches it,
    even with the same (guessed) session id."""

    def __init__(self, max_sessions: int = 10000, max_turns: int = 50, idle_ttl_s: float = 3600.0):
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self.idle_ttl_s = idle_ttl_s
        self._data: OrderedDict[tuple[str, str, str], Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, owner: str, customer_id: str | None = None) -> Session:
        """A new session with a server-made id, bound to ``owner`` (the API key) and ``customer_id``."""
        return self.get(owner, new_session_id(), customer_id)

    def find(self, owner: str, session_id: str, customer_id: str | None = None) -> Session | None:
        """The live session ``session_id`` of this key and customer, or None (unknown, expired, or another key's or
        customer's: the caller cannot tell which). Never creates one."""
        now = time.monotonic()
        key = (owner, customer_id or "", session_id)
        with self._lock:
            session = self._data.get(key)
            if session is None:
                return None
            if now - session.last_seen > self.idle_ttl_s:
                del self._data[key]
                return None
            session.last_seen = now
            self._data.move_to_end(key)
        return session

    def held_elsewhere(self, owner: str, session_id: str, customer_id: str | None = None) -> bool:
        """Whether another key or customer holds a session with this id (for the audit log only; a scan, so call
        it on the refusal path only)."""
        mine = (owner, customer_id or "", session_id)
        with self._lock:
            return any(key[2] == session_id and key != mine for key in self._data)

    def get(self, owner: str, session_id: str, customer_id: str | None = None) -> Session:
        """The session ``session_id`` of this key and customer, made when absent or expired: for in-process callers
        that name their own sessions (evaluation, benches); the HTTP API uses ``create`` and ``find``."""
        now = time.monotonic()
        key = (owner, customer_id or "", session_id)
        with self._lock:
            session = self._data.get(key)
            if session is not None and now - session.last_seen > self.idle_ttl_s:
                session = None
            if session is None:
                session = Session(id=session_id, owner=owner, customer_id=customer_id)
                self._data[key] = session
            session.last_seen = now
            self._data.move_to_end(key)
            while len(self._data) > self.max_sessions:
                self._data.popitem(last=False)
        return session

    def peek(self, owner: str, session_id: str, customer_id: str | None = None) -> Session | None:
        with self._lock:
            return self._data.get((owner, customer_id or "", session_id))

    def __len__(self) -> int:
        return len(self._data)
