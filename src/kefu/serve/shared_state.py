"""The serving state a service is built with: in process for the embedded default, in Redis for the postgres state
backend (``kefu.state``), where the sessions, the response cache, its single flight and the rate limits of several
``kefu serve`` replicas live so that any replica can serve any request. Each Redis store names its keys
``<prefix>:<what>:...`` with ``kefu.state.redis_prefix()``.
"""

from __future__ import annotations

import threading

import redis

from kefu import state
from kefu.serve.cache import RedisResponseCache, RedisSingleFlight
from kefu.serve.config import ServeConfig
from kefu.serve.gateway import RedisTokenBucketLimiter, TokenBucketLimiter
from kefu.serve.metrics import Metrics
from kefu.serve.sessions import RedisSessionStore
from kefu.types import KefuError

__all__ = ["redis_client", "shared", "serving_state", "rate_limiter"]

FLIGHT_LEASE_MARGIN_S = 5.0  # a leader's lock outlives the answer deadline by this much (then its replica is dead)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def shared() -> bool:
    """Whether this process keeps its serving state in Redis (the postgres backend) rather than in process."""
    return state.redis_url() is not None


def redis_client(url: str | None = None) -> redis.Redis:
    """The process's client of ``url`` (default: the state backend's Redis); a thread-safe connection pool, strings
    decoded as UTF-8."""
    url = url or state.redis_url()
    if url is None:
        raise KefuError("no Redis configured: the state backend is the embedded default (set state.backend: postgres "
                        f"with redis_url, or {state.BACKEND_ENV}=postgres and {state.REDIS_URL_ENV})")
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                                          socket_connect_timeout=5, health_check_interval=30)
    return client


def serving_state(config: ServeConfig, metrics: Metrics) -> dict:
    """The ``ChatService`` arguments for the state backend: none for the embedded default (the service keeps its
    sessions, cache and single flight in process), the Redis ones, with the same bounds, for the postgres backend."""
    if not shared():
        return {}
    client, prefix = redis_client(), state.redis_prefix()
    lease = (config.answer_deadline_s or 30.0) + FLIGHT_LEASE_MARGIN_S
    return {"sessions": RedisSessionStore(client, prefix, config.max_sessions, config.max_turns_per_session),
            "cache": RedisResponseCache(client, prefix, config.cache_ttl_s, config.cache_max_entries,
                                        on_hit=metrics.cache_hits.inc, on_miss=metrics.cache_misses.inc),
            "flights": RedisSingleFlight(client, prefix, lease_s=lease)}


def rate_limiter(config: ServeConfig) -> TokenBucketLimiter:
    """The per-key rate limits: in process by default, one global bucket per key in Redis for the postgres backend."""
    if not shared():
        return TokenBucketLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    return RedisTokenBucketLimiter(redis_client(), state.redis_prefix(), config.rate_limit_per_s,
                                   config.rate_limit_burst)
