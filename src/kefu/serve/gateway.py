"""Gateway pieces: API-key authentication, per-key token-bucket rate limits, PII masking for logs and caches."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass

from kefu.loop.feedback import mask_text
from kefu.safety.keys import KeyStore

__all__ = ["Caller", "Authenticator", "TokenBucketLimiter", "mask_text"]


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``id`` is stable and not secret (used for rate limits, sessions, logs)."""

    id: str
    name: str
    permissions: frozenset[str]
    customer_id: str | None = None  # a key bound to one customer acts for that customer only

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def customer(self, requested: str | None) -> str | None:
        """The customer this request acts for: a bound key's own (naming another is refused), else the one named
        by the (trusted) caller. Raises ``PermissionError`` for a bound key naming someone else."""
        if self.customer_id is None:
            return requested
        if requested not in (None, "", self.customer_id):
            raise PermissionError(f"this key acts for customer {self.customer_id} only")
        return self.customer_id


ENV_PERMISSIONS = frozenset({"chat", "feedback:write"})
LOCAL = Caller("local", "local-dev (--no-auth)", frozenset({"chat", "feedback:write", "feedback:read"}))


class Authenticator:
    """Accepts keys from ``$KEFU_API_KEY`` (comma separated) and from the safety stage's key store.

    ``enabled=False`` (``--no-auth``) lets every request in as the local developer: for local use only.
    """

    def __init__(self, keys: list[str] | None = None, *, enabled: bool = True, use_store: bool = True):
        self.enabled = enabled
        if keys is None:
            keys = [k.strip() for k in os.environ.get("KEFU_API_KEY", "").split(",") if k.strip()]
        self._env = {hashlib.sha256(k.encode("utf-8")).hexdigest(): k for k in keys}
        self.use_store = use_store and enabled
        self._store = None

    def _key_store(self):
        """The safety stage's key store once it holds a key (keys created while serving count at once)."""
        if self._store is None and self.use_store:
            if KeyStore.exists():
                self._store = KeyStore.open()
        return self._store

    @property
    def configured(self) -> bool:
        return bool(self._env) or self._key_store() is not None

    def authenticate(self, authorization: str | None) -> Caller | None:
        if not self.enabled:
            return LOCAL
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        key = authorization[7:].strip()
        if not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        for known_digest in self._env:
            if hmac.compare_digest(known_digest, digest):
                return Caller("env-" + digest[:10], "env:KEFU_API_KEY", ENV_PERMISSIONS)
        store = self._key_store()
        if store is not None:
            principal = store.authenticate(key)
            if principal is not None:
                return Caller(principal.key_id, principal.name, frozenset(principal.permissions),
                              principal.customer_id)
        return None


class TokenBucketLimiter:
    """Per-key token bucket: ``rate`` tokens/s refill, at most ``burst`` stored. Thread-safe, bounded memory."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100000, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 when allowed, else the seconds to wait before retrying."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:  # drop the stalest buckets (they would be full anyway)
                for stale in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.max_keys // 10]:
                    del self._buckets[stale]
            return (cost - tokens) / self.rate
