"""Multi-turn state per (API key, customer, session id): masked history, intents, entities, failures; bounded LRU.

Sessions are made by the server (``SessionStore.create``: a random, unguessable id the API returns to the client)
and bound to the key and the customer they were made for; a client continues one only by sending its id with the
same key and customer (``find``; the HTTP API answers 404 otherwise). Sessions of different keys, customers or ids
never see each other's turns. A handoff to a human carries a rule-based summary
(intents seen, entities mentioned, the last question) so the agent does not have to reread the chat.

``SessionStore`` keeps them in process (the embedded default); ``RedisSessionStore`` keeps them in Redis (the
postgres state backend) so that a conversation continues on whichever replica its next turn reaches: every change
the pipeline makes to a ``RedisSession`` is written through at once, with the same bounds (turns, idle expiry, the
number of sessions).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis

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


# -- shared sessions (Redis) -----------------------------------------------------------------------------------------

# KEYS: the session hash, its turns, intents and entities, the LRU index, the id's holders.
# ARGV: idle ttl (ms), now (s), binding digest. Returns nil when the session is unknown or expired.
_TOUCH = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
redis.call('PEXPIRE', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
return {fields, redis.call('LRANGE', KEYS[2], 0, -1), redis.call('LRANGE', KEYS[3], 0, -1),
        redis.call('HGETALL', KEYS[4])}
"""

# KEYS as _TOUCH. ARGV: idle ttl (ms), now (s), digest, id, owner, customer, max sessions, session key prefix.
# A new session, then the bounds: idle ones leave the index, the least recently used beyond max are deleted.
_CREATE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'id', ARGV[4], 'owner', ARGV[5], 'customer', ARGV[6], 'failures', 0, 'handed_off', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[3])
redis.call('PEXPIRE', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[1]) / 1000)
local excess = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[7])
if excess > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[5], excess)
  for i = 1, #dropped, 2 do
    local base = ARGV[8] .. dropped[i]
    redis.call('DEL', base, base .. ':turns', base .. ':intents', base .. ':entities')
  end
end
return 1
"""


class _WrittenThrough(list):
    """A session's intents: what is added (``append``, ``extend``, ``+=``) is also added in Redis."""

    def __init__(self, items, on_append):
        super().__init__(items)
        self._on_append = on_append

    def append(self, item) -> None:
        super().append(item)
        self._on_append(item)

    def extend(self, items) -> None:
        for item in items:
            self.append(item)

    def __iadd__(self, items):
        self.extend(items)
        return self


@dataclass
class RedisSession(Session):
    """A session read from Redis whose every change (a turn, an entity, an intent, a failure, a handoff) is written
    back at once, so the next turn may reach any replica. A copy made with ``dataclasses.replace`` (the pipeline's
    detached samples) has no ``store`` and writes nothing."""

    store: "RedisSessionStore | None" = field(default=None, init=False, repr=False, compare=False)
    digest: str = field(default="", init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        store = self.__dict__.get("store")
        if store is not None and name in ("failures", "handed_off"):
            old = self.__dict__.get(name)
            object.__setattr__(self, name, value)
            store._write_field(self, name, old, value)
            return
        object.__setattr__(self, name, value)

    def attach(self, store: "RedisSessionStore", digest: str) -> "RedisSession":
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "intents", _WrittenThrough(self.intents, lambda i: store._append_intent(self, i)))
        object.__setattr__(self, "store", store)
        return self

    def add_turn(self, role: str, content: str, max_turns: int) -> None:
        super().add_turn(role, content, max_turns)
        if self.store is not None:
            self.store._append_turn(self, {"role": role, "content": content}, max_turns)

    def remember(self, kind: str, values: list[str] | tuple[str, ...]) -> None:
        super().remember(kind, values)
        if self.store is not None:
            self.store._write_entities(self, kind)


class RedisSessionStore:
    """``SessionStore``'s interface and bounds, kept in Redis for every replica: sessions bound to (key, customer,
    id), idle ones expiring after ``idle_ttl_s`` (a Redis TTL refreshed on each use), at most ``max_sessions`` (the
    least recently used deleted first), at most ``max_turns`` turns each.

    Keys: ``<prefix>:session:<digest>`` (a hash: id, owner, customer, failures, handed_off) with ``:turns``,
    ``:intents`` and ``:entities`` beside it, where the digest is a hash of (key, customer, id) so that the binding
    is part of the name; ``<prefix>:sessions`` orders them by last use; ``<prefix>:session-id:<hash of id>`` lists
    the bindings an id has (for the audit of a refused id only)."""

    def __init__(self, client: redis.Redis, prefix: str, max_sessions: int = 10000, max_turns: int = 50,
                 idle_ttl_s: float = 3600.0):
        self.client = client
        self.prefix = prefix
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self.idle_ttl_s = idle_ttl_s
        self._touch = client.register_script(_TOUCH)
        self._create = client.register_script(_CREATE)

    # -- names ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _digest(owner: str, session_id: str, customer_id: str | None) -> str:
        return hashlib.sha256("\x1f".join((owner, customer_id or "", session_id)).encode("utf-8")).hexdigest()[:32]

    def _base(self, digest: str) -> str:
        return f"{self.prefix}:session:{digest}"

    def _keys(self, digest: str, session_id: str) -> list[str]:
        base = self._base(digest)
        holders = hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()[:32]
        return [base, f"{base}:turns", f"{base}:intents", f"{base}:entities", f"{self.prefix}:sessions",
                f"{self.prefix}:session-id:{holders}"]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.idle_ttl_s * 1000))

    # -- the store's interface ------------------------------------------------------------------------------------------
    def create(self, owner: str, customer_id: str | None = None) -> Session:
        """A new session with a server-made id, bound to ``owner`` (the API key) and ``customer_id``."""
        return self._new(owner, new_session_id(), customer_id)

    def find(self, owner: str, session_id: str, customer_id: str | None = None) -> Session | None:
        """The live session ``session_id`` of this key and customer (its idle time restarts), or None (unknown,
        expired, or another key's or customer's). Never creates one."""
        digest = self._digest(owner, session_id, customer_id)
        found = self._touch(keys=self._keys(digest, session_id), args=[self._ttl_ms, time.time(), digest])
        return self._session(digest, found) if found else None

    def get(self, owner: str, session_id: str, customer_id: str | None = None) -> Session:
        """The session ``session_id`` of this key and customer, made when absent or expired (in-process callers
        that name their own sessions)."""
        return self.find(owner, session_id, customer_id) or self._new(owner, session_id, customer_id)

    def peek(self, owner: str, session_id: str, customer_id: str | None = None) -> Session | None:
        """The session as it is, its idle time not restarted; None when there is none."""
        digest = self._digest(owner, session_id, customer_id)
        base = self._base(digest)
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(base).lrange(f"{base}:turns", 0, -1).lrange(f"{base}:intents", 0, -1).hgetall(f"{base}:entities")
        fields, turns, intents, entities = pipe.execute()
        if not fields:
            return None
        return self._session(digest, [_pairs(fields), turns, intents, _pairs(entities)])

    def held_elsewhere(self, owner: str, session_id: str, customer_id: str | None = None) -> bool:
        """Whether another key or customer holds a live session with this id (for the audit log only)."""
        mine = self._digest(owner, session_id, customer_id)
        holders = self.client.smembers(self._keys(mine, session_id)[5])
        return any(d != mine and self.client.exists(self._base(d)) for d in holders)

    def __len__(self) -> int:
        return int(self.client.zcount(f"{self.prefix}:sessions", time.time() - self.idle_ttl_s, "+inf"))

    # -- reading and writing --------------------------------------------------------------------------------------------
    def _new(self, owner: str, session_id: str, customer_id: str | None) -> RedisSession:
        digest = self._digest(owner, session_id, customer_id)
        self._create(keys=self._keys(digest, session_id),
                     args=[self._ttl_ms, time.time(), digest, session_id, owner, customer_id or "", self.max_sessions,
                           f"{self.prefix}:session:"])
        return RedisSession(id=session_id, owner=owner, customer_id=customer_id).attach(self, digest)

    def _session(self, digest: str, found: list) -> RedisSession:
        fields, turns, intents, entities = found
        fields = fields if isinstance(fields, dict) else _pairs(fields)
        entities = entities if isinstance(entities, dict) else _pairs(entities)
        session = RedisSession(id=fields["id"], owner=fields["owner"], customer_id=fields.get("customer") or None,
                               turns=[json.loads(t) for t in turns], intents=list(intents),
                               entities={k: json.loads(v) for k, v in entities.items()},
                               failures=int(fields.get("failures") or 0),
                               handed_off=fields.get("handed_off") == "1")
        return session.attach(self, digest)

    def _write(self, session: RedisSession, key: str, *commands: tuple) -> None:
        """Run ``commands`` on ``key`` of the session and keep its idle TTL (one round trip; no MULTI: each command
        is atomic and a reader seeing the list before its trim or its TTL is harmless)."""
        pipe = self.client.pipeline(transaction=False)
        for name, *args in commands:
            getattr(pipe, name)(key, *args)
        pipe.pexpire(key, self._ttl_ms)
        pipe.execute()

    def _append_turn(self, session: RedisSession, turn: dict[str, str], max_turns: int) -> None:
        self._write(session, f"{self._base(session.digest)}:turns",
                    ("rpush", json.dumps(turn, ensure_ascii=False)), ("ltrim", -max_turns, -1))

    def _append_intent(self, session: RedisSession, intent: str) -> None:
        self._write(session, f"{self._base(session.digest)}:intents", ("rpush", intent))

    def _write_entities(self, session: RedisSession, kind: str) -> None:
        self._write(session, f"{self._base(session.digest)}:entities",
                    ("hset", kind, json.dumps(session.entities.get(kind, []), ensure_ascii=False)))

    def _write_field(self, session: RedisSession, name: str, old: Any, value: Any) -> None:
        """``failures`` changes by its difference (two replicas counting at once both count), ``handed_off`` is
        set; the hash is only written while it exists (an expired session is not brought back half)."""
        base = self._base(session.digest)
        if not self.client.exists(base):
            return
        if name == "failures":
            self._write(session, base, ("hincrby", name, int(value) - int(old or 0)))
        else:
            self._write(session, base, ("hset", name, "1" if value else "0"))


def _pairs(flat) -> dict[str, str]:
    """A Redis hash as returned by a script (a flat [field, value, ...] list) or by HGETALL (a dict)."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[0::2], flat[1::2]))
