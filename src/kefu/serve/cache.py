"""Response cache keyed on normalised text + the entities that change the answer + the KG version.

Unlike embedding-similarity caches (GPTCache), two questions that differ only in an order number, a SKU, a size, a
colour or a negation word never share an entry: those values are part of the key. Per-customer answers (order
status, anything from a customer-scoped tool) are not cached at all. Entries expire after ``ttl_s``; a KG version
change drops everything.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

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
        with self._lock:
            entry = self._data.get(k)
            if entry is not None and self.clock() - entry.created > self.ttl_s:
                del self._data[k]
                entry = None
            if entry is not None:
                self._data.move_to_end(k)
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
        with self._lock:
            self._data[k] = CacheEntry(answer, path, self.clock(), dict(meta or {}))
            self._data.move_to_end(k)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return True

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
