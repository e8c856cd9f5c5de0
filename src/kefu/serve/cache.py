"""Response cache keyed on normalised text + the entities that change the answer + the KG version.

Unlike embedding-similarity caches (GPTCache), two questions that differ only in an order number, a SKU, a size, a
colour or a negation word never share an entry: those values are part of the key. Per-customer answers (order
status, anything from a customer-scoped tool) are not cached at all. Entries expire after ``ttl_s``; a KG version
change drops everything.

``ResponseCache`` keeps the entries in process (the embedded default); ``RedisResponseCache`` keeps them in Redis
(the postgres state backend), so an answer one replica cached is a hit on every other, with the same TTL, bound and
rules. The same question asked on several replicas while its answer is being generated is generated once:
``SingleFlight`` in process, ``RedisSingleFlight`` across replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import redis

from kefu.serve.text import key_entities, normalise


@dataclass
class CacheEntry:
    answer: str
    path: str
    created: float
    meta: dict[str, Any] = field(default_factory=dict)


class ResponseCache:
    """Thread-safe LRU with TTL. ``on_hit``/``on_miss`` callbacks feed the metrics."""

    def __init__(self, ttl_s: float = 600.0, max_entries: int = 10000, *, clock: Callable[[], float] = time.monotonic,
                 on_hit: Callable[[], None] | None = None, on_miss: Callable[[], None] | None = None):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.on_hit = on_hit
        self.on_miss = on_miss
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.kg_version: str | None = None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(text: str, kg_version: str | None, model: str = "", context: str = "") -> str:
        """sha256 of (model, KG version, context, normalised text, entity signature); raw values are not stored."""
        parts = [model, str(kg_version), context, normalise(text), key_entities(text).signature()]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    def set_kg_version(self, version: str | None) -> None:
        """Drop every entry when the knowledge graph changed (prices, stock and policies may differ)."""
        with self._lock:
            if version != self.kg_version:
                self._data.clear()
                self.kg_version = version

    @staticmethod
    def cacheable(text: str) -> bool:
        """Turns that are only filler (你好/在吗/谢谢) normalise to nothing and are never shared."""
        return len(normalise(text)) >= 2

    def shared_key(self, text: str, *, model: str = "", context: str = "", personal: bool = False) -> str | None:
        """The key an answer to ``text`` is shared under, None when it is never shared (per-customer answers,
        filler turns, a disabled cache)."""
        if personal or self.max_entries <= 0 or not self.cacheable(text):
            return None
        return self.key(text, self.kg_version, model, context)

    def get(self, text: str, *, model: str = "", context: str = "") -> CacheEntry | None:
        k = self.shared_key(text, model=model, context=context)
        if k is None:
            return None
        entry = self._lookup(k)
        with self._lock:
            if entry is not None:
                self.hits += 1
            else:
                self.misses += 1
        callback = self.on_hit if entry is not None else self.on_miss
        if callback:
            callback()
        return entry

    def put(self, text: str, answer: str, path: str, *, model: str = "", context: str = "",
            personal: bool = False, meta: dict[str, Any] | None = None) -> bool:
        """Store an answer; refuses (returns False) per-customer answers."""
        k = self.shared_key(text, model=model, context=context, personal=personal)
        if k is None:
            return False
        self._store(k, CacheEntry(answer, path, self.clock(), dict(meta or {})))
        return True

    def _lookup(self, k: str) -> CacheEntry | None:
        """The live entry under ``k`` (an expired one is dropped), now the most recently used."""
        with self._lock:
            entry = self._data.get(k)
            if entry is not None and self.clock() - entry.created > self.ttl_s:
                del self._data[k]
                entry = None
            if entry is not None:
                self._data.move_to_end(k)
        return entry

    def _store(self, k: str, entry: CacheEntry) -> None:
        """Keep ``entry`` under ``k``; the least recently used beyond ``max_entries`` leave."""
        with self._lock:
            self._data[k] = entry
            self._data.move_to_end(k)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# KEYS: the entry, the LRU index. ARGV: entry JSON, ttl (ms), now (s), cache key, max entries, entry key prefix.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) / 1000)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #dropped, 2 do redis.call('DEL', ARGV[6] .. dropped[i]) end
end
return 1
"""


# KEYS: the entry, the LRU index. ARGV: now (s), cache key. The entry (now the most recently used), or nil (and the
# key leaves the index: it has expired).
_GET = """
local entry = redis.call('GET', KEYS[1])
if entry then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) else redis.call('ZREM', KEYS[2], ARGV[2]) end
return entry
"""


class RedisResponseCache(ResponseCache):
    """``ResponseCache`` with its entries in Redis, shared by every replica: the same keys and rules (nothing
    personal, no filler, the KG version and the model in the key), each entry expiring ``ttl_s`` after it was written
    (a Redis TTL), at most ``max_entries`` (the least recently used deleted first).

    Keys: ``<prefix>:cache:<key>`` (the entry as JSON) and ``<prefix>:cache`` (the keys by last use). A KG version
    change needs no purge here: the version is part of every key, so older entries are never read again and expire."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float = 600.0, max_entries: int = 10000, *,
                 on_hit: Callable[[], None] | None = None, on_miss: Callable[[], None] | None = None):
        super().__init__(ttl_s, max_entries, clock=time.time, on_hit=on_hit, on_miss=on_miss)
        self.client = client
        self.prefix = prefix
        self._index = f"{prefix}:cache"
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)

    def set_kg_version(self, version: str | None) -> None:
        self.kg_version = version

    def _lookup(self, k: str) -> CacheEntry | None:
        raw = self._get(keys=[f"{self._index}:{k}", self._index], args=[self.clock(), k])
        return CacheEntry(**json.loads(raw)) if raw else None

    def _store(self, k: str, entry: CacheEntry) -> None:
        ttl_ms = int(self.ttl_s * 1000)
        if ttl_ms <= 0:  # entries that expire at once are not written
            return
        self._put(keys=[f"{self._index}:{k}", self._index],
                  args=[json.dumps(asdict(entry), ensure_ascii=False), ttl_ms, entry.created, k, self.max_entries,
                        f"{self._index}:"])

    def clear(self) -> None:
        keys = [f"{self._index}:{k}" for k in self.client.zrange(self._index, 0, -1)]
        for start in range(0, len(keys), 500):
            self.client.delete(*keys[start:start + 500])
        self.client.delete(self._index)

    def __len__(self) -> int:
        return int(self.client.zcount(self._index, self.clock() - self.ttl_s, "+inf"))


class SingleFlight:
    """The same question generated once at a time in this process: the first turn to ``join`` a key leads (generates)
    and ``finish``es it with its answer; the turns that join meanwhile wait for that answer (None when the leader
    failed or was abandoned: they generate themselves)."""

    def __init__(self) -> None:
        self._in_flight: dict[str, asyncio.Future] = {}

    async def join(self, key: str) -> tuple[bool, str | None]:
        """(True, None) when this turn leads ``key``; else (False, the leader's answer or None)."""
        leader = self._in_flight.get(key)
        if leader is None:
            self._in_flight[key] = asyncio.get_running_loop().create_future()
            return True, None
        return False, await asyncio.shield(leader)

    def finish(self, key: str, answer: str | None) -> None:
        """The leader is done: ``answer`` (None: failed) goes to the turns waiting, and the key is free again."""
        leader = self._in_flight.pop(key, None)
        if leader is not None and not leader.done():
            leader.set_result(answer)

    def __len__(self) -> int:
        """Questions being generated (or waited for) in this process now."""
        return len(self._in_flight)


# KEYS: the flight's lock. ARGV: this leader's token. The lock is released only by the leader holding it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisSingleFlight(SingleFlight):
    """``SingleFlight`` across replicas: the leader holds ``<prefix>:flight:<key>`` (SET NX, expiring after
    ``lease_s`` should its replica die) and leaves its answer under ``<prefix>:flight:<key>:answer`` for
    ``answer_ttl_s``; the others poll every ``poll_s`` until the answer is there or the lock is gone (then they
    generate themselves, as after a failed leader). Within one replica, turns wait on the local leader as before."""

    def __init__(self, client: redis.Redis, prefix: str, *, lease_s: float = 30.0, answer_ttl_s: float = 10.0,
                 poll_s: float = 0.05):
        super().__init__()
        self.client = client
        self.prefix = prefix
        self.lease_s = lease_s
        self.answer_ttl_s = answer_ttl_s
        self.poll_s = poll_s
        self._tokens: dict[str, str] = {}
        self._release = client.register_script(_RELEASE)

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}:flight:{key}"

    async def join(self, key: str) -> tuple[bool, str | None]:
        if key in self._in_flight:  # a turn of this replica leads or waits already: wait with it
            return await super().join(key)
        token = secrets.token_hex(16)
        lock = self._lock_key(key)
        if self.client.set(lock, token, nx=True, px=int(self.lease_s * 1000)):
            self._tokens[key] = token
            return await super().join(key)
        waiting = asyncio.get_running_loop().create_future()  # turns of this replica asking meanwhile wait here
        self._in_flight[key] = waiting
        answer = None
        try:
            deadline = time.monotonic() + self.lease_s
            while time.monotonic() < deadline:
                pipe = self.client.pipeline(transaction=False)
                answer, held = pipe.get(f"{lock}:answer").exists(lock).execute()
                if answer is not None or not held:
                    break
                await asyncio.sleep(self.poll_s)
        finally:
            self._in_flight.pop(key, None)
            if not waiting.done():
                waiting.set_result(answer)
        return False, answer

    def finish(self, key: str, answer: str | None) -> None:
        token = self._tokens.pop(key, None)
        if token is not None:
            lock = self._lock_key(key)
            if answer is not None:
                self.client.set(f"{lock}:answer", answer, px=int(self.answer_ttl_s * 1000))
            self._release(keys=[lock], args=[token])
        super().finish(key, answer)
