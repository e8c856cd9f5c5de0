"""Gateway pieces: API-key and customer-token authentication, per-key token-bucket rate limits (in process, or in
Redis so that several replicas share one limit), PII masking for logs and caches.

Who the customer is (docs/security.md, "Customer identity"): a request acts for a customer only when that is
vouched for -- a key bound to one customer, a customer token minted by the shop's server (``customer:assert``), or
a key that itself holds ``customer:assert`` naming the customer. A ``customer_id``/``user`` field sent with any other
key is not an identity: such a request gets no customer data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from dataclasses import dataclass, field

import redis

from kefu.loop.feedback import mask_text
from kefu.safety.keys import LOCAL_KEY_ID, CustomerTokenError, KeyStore, Principal, is_customer_token

__all__ = ["AuthFailure", "Caller", "Authenticator", "TokenBucketLimiter", "RedisTokenBucketLimiter", "mask_text"]

_KEY_ID = re.compile(r"^kefu_([a-z0-9]{12})_")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``id`` is stable and not secret (used for rate limits, sessions, logs)."""

    id: str
    name: str
    permissions: frozenset[str]
    customer_id: str | None = None  # a key bound to one customer, or a customer token: that customer only
    principal: Principal | None = field(default=None, compare=False)  # what ``acting_as`` names in the audit log
    token: bool = False  # authenticated by a customer token (not a key)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def rate_key(self) -> str:
        """The rate-limit bucket: the key's, or per customer for customer tokens (one shop key mints them all)."""
        if self.token and self.customer_id is not None:
            return f"{self.id}/" + hashlib.sha256(self.customer_id.encode("utf-8")).hexdigest()[:16]
        return self.id

    @property
    def acting(self) -> Principal:
        return self.principal or Principal(self.id, self.name, "customer-app", self.customer_id)

    def customer(self, requested: str | None) -> str | None:
        """The verified customer this request acts for: a bound key's or a token's own (naming another raises
        ``PermissionError``); the one named by a caller that may assert customers (``customer:assert``: the shop's
        server, admin, ``--no-auth``); else None -- a name sent by any other key is a claim, not an identity, and
        unlocks no customer data."""
        if self.customer_id is not None:
            if requested not in (None, "", self.customer_id):
                raise PermissionError(f"this {'token' if self.token else 'key'} acts for customer "
                                      f"{self.customer_id} only")
            return self.customer_id
        if requested and self.can("customer:assert"):
            return requested
        return None


class AuthFailure(Exception):
    """Why a request is not authenticated (401): ``reason`` for the audit log, ``key_id`` when the credential names
    one (never the secret), ``code`` for the API error."""

    def __init__(self, message: str, *, reason: str, key_id: str | None = None, code: str = "invalid_api_key"):
        super().__init__(message)
        self.message, self.reason, self.key_id, self.code = message, reason, key_id, code


ENV_PERMISSIONS = frozenset({"chat", "feedback:write"})
LOCAL = Caller("local", "local-dev (--no-auth)", frozenset({"chat", "feedback:write", "feedback:read", "customer:assert"}),
               principal=Principal(LOCAL_KEY_ID, "local-dev (--no-auth)", "shop-backend"))
MISSING_KEY = ("Incorrect or missing API key: send 'Authorization: Bearer <key>' with a key from $KEFU_API_KEY or "
               "`kefu keys create`, or a customer token from the shop's server.")


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
        self._signer: KeyStore | None = None  # the store opened only to sign/verify customer tokens

    def _key_store(self):
        """The safety stage's key store once it holds a key (keys created while serving count at once)."""
        if self._store is None and self.use_store:
            if KeyStore.exists():
                self._store = KeyStore.open()
        return self._store

    @property
    def configured(self) -> bool:
        return bool(self._env) or self._key_store() is not None

    def token_store(self) -> KeyStore:
        """The key store whose pepper signs customer tokens (opened on demand, also under ``--no-auth``)."""
        store = self._key_store()
        if store is None:
            if self._signer is None:
                self._signer = KeyStore.open()
            store = self._signer
        return store

    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller, or None when not authenticated (``check`` says why)."""
        try:
            return self.check(authorization)
        except AuthFailure:
            return None

    def check(self, authorization: str | None) -> Caller:
        """The caller of a request's ``Authorization`` header: a key (``$KEFU_API_KEY`` or the key store) or a
        customer token; raises ``AuthFailure`` with the reason otherwise. ``--no-auth``: everyone is the local
        developer, except that a customer token still stands for its customer (so the widget flow works locally)."""
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            if not self.enabled:
                return LOCAL
            raise AuthFailure(MISSING_KEY, reason="no bearer credential" if not authorization else
                              "not a bearer credential")
        if is_customer_token(credential):
            try:
                principal = self.token_store().verify_customer_token(credential, check_key=self.enabled)
            except CustomerTokenError as exc:
                raise AuthFailure(str(exc), reason=f"customer token: {exc.reason}", key_id=exc.key_id,
                                  code="customer_token_expired" if exc.reason == "expired"
                                  else "invalid_customer_token") from None
            return Caller(principal.key_id, principal.name, frozenset(principal.permissions), principal.customer_id,
                          principal, token=True)
        if not self.enabled:
            return LOCAL
        digest = hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()
        for known_digest in self._env:
            if hmac.compare_digest(known_digest, digest):
                return Caller("env-" + digest[:10], "env:KEFU_API_KEY", ENV_PERMISSIONS)
        store = self._key_store()
        if store is not None:
            principal = store.authenticate(credential)
            if principal is not None:
                return Caller(principal.key_id, principal.name, frozenset(principal.permissions),
                              principal.customer_id, principal)
        match = _KEY_ID.match(credential)
        raise AuthFailure(MISSING_KEY, reason="unknown or revoked API key", key_id=match.group(1) if match else None)


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


# KEYS: the bucket. ARGV: rate (tokens/s), burst, cost. Redis's own clock, so replicas' clocks do not matter; the
# bucket expires once it would be full again (a full bucket and no bucket are the same). Returns the wait as a string
# (a Lua number would come back truncated to an integer).
_ACQUIRE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisTokenBucketLimiter(TokenBucketLimiter):
    """``TokenBucketLimiter`` held in Redis: one bucket per key for every replica together (``<prefix>:ratelimit:
    <key>``), taken and refilled atomically by one Lua script, so a key's burst and rate are the same with one
    replica or ten. Memory stays bounded without ``max_keys``: a bucket expires once it would be full again."""

    def __init__(self, client: redis.Redis, prefix: str, rate: float, burst: int):
        super().__init__(rate, burst)
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 when allowed, else the seconds to wait before retrying."""
        return float(self._acquire(keys=[f"{self.prefix}:ratelimit:{key}"], args=[self.rate, self.burst, cost]))
