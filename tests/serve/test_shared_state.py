"""Serving state in Redis (the postgres state backend): sessions, the response cache, its single flight and the rate
limits are shared by replicas -- here two stores or services on separate Redis clients, as two processes would be --
with the bounds of the in-process versions. The real Redis on loopback (``redis_state``/``shared_state``)."""

import asyncio
import dataclasses
import time

import pytest
import redis

from kefu.serve.cache import RedisResponseCache, RedisSingleFlight, ResponseCache, SingleFlight
from kefu.serve.config import ServeConfig
from kefu.serve.gateway import RedisTokenBucketLimiter, TokenBucketLimiter
from kefu.serve.metrics import Metrics
from kefu.serve.pipeline import ChatService
from kefu.serve.sessions import RedisSessionStore, SessionStore
from kefu.serve.shared_state import rate_limiter, serving_state
from serve_support import fake_order_lookup, fake_retriever


@pytest.fixture
def replicas(redis_state):
    """Two Redis clients on the same state (two replicas' connections) and the test's key prefix."""
    url, prefix = redis_state
    clients = [redis.Redis.from_url(url, decode_responses=True) for _ in range(2)]
    yield clients, prefix
    for client in clients:
        client.close()


# -- sessions ---------------------------------------------------------------------------------------------------------

def test_a_session_made_on_one_replica_continues_on_another(replicas):
    (one, two), prefix = replicas
    a, b = RedisSessionStore(one, prefix), RedisSessionStore(two, prefix)
    made = a.create("key-a", "C0001")
    made.add_turn("user", "订单1234567890123456到哪了", a.max_turns)
    made.remember("order_no", ["1234567890123456"])
    made.intents.append("order_status")
    made.failures += 1
    made.add_turn("assistant", "已发货", a.max_turns)
    found = b.find("key-a", made.id, "C0001")
    assert found is not None and found.id == made.id and found.customer_id == "C0001"
    assert [t["content"] for t in found.turns] == ["订单1234567890123456到哪了", "已发货"]
    assert found.last("order_no") == "1234567890123456" and found.intents == ["order_status"]
    assert found.failures == 1 and not found.handed_off
    found.failures += 1  # counted on the second replica, seen by the first
    found.handed_off = True
    again = a.find("key-a", made.id, "C0001")
    assert again.failures == 2 and again.handed_off and "未解决次数：2" in again.summary()["text"]
    assert len(a) == 1


def test_shared_sessions_stay_bound_to_their_key_and_customer(replicas):
    (one, two), prefix = replicas
    a, b = RedisSessionStore(one, prefix), RedisSessionStore(two, prefix)
    made = a.create("key-a", "C0001")
    made.add_turn("user", "我的订单呢", a.max_turns)
    assert b.find("key-b", made.id, "C0001") is None  # another key with the id
    assert b.find("key-a", made.id, "C0002") is None  # another customer with the id
    assert b.find("key-a", "sess_guessed", "C0001") is None
    assert b.held_elsewhere("key-b", made.id, "C0001") and not b.held_elsewhere("key-a", made.id, "C0001")
    assert b.get("key-b", made.id, "C0001").turns == []  # a caller naming its own id gets a session of its own
    assert b.peek("key-a", made.id, "C0001").turns == [{"role": "user", "content": "我的订单呢"}]


def test_shared_sessions_have_the_in_process_bounds(replicas):
    (one, _), prefix = replicas
    store = RedisSessionStore(one, prefix, max_sessions=3, max_turns=4, idle_ttl_s=0.3)
    local = SessionStore(max_sessions=3, max_turns=4)
    for i in range(10):
        store.get("k", f"s{i}")
        local.get("k", f"s{i}")
    assert len(store) == len(local) == 3
    assert store.peek("k", "s0") is None and store.peek("k", "s9") is not None
    session = store.get("k", "s9")
    for i in range(9):
        session.add_turn("user", str(i), store.max_turns)
    assert [t["content"] for t in store.peek("k", "s9").turns] == ["5", "6", "7", "8"]
    time.sleep(0.5)  # idle longer than idle_ttl_s
    assert store.find("k", "s9") is None and len(store) == 0


def test_a_detached_copy_of_a_shared_session_writes_nothing(replicas):
    """The pipeline's extra samples (n > 1) work on a ``dataclasses.replace`` copy that the store must not keep."""
    (one, _), prefix = replicas
    store = RedisSessionStore(one, prefix)
    session = store.create("k")
    session.add_turn("user", "问题", store.max_turns)
    copy = dataclasses.replace(session, turns=list(session.turns), intents=list(session.intents),
                               entities={k: list(v) for k, v in session.entities.items()})
    copy.add_turn("assistant", "另一个样本", store.max_turns)
    copy.intents.append("greeting")
    copy.remember("sku", ["SL-10001"])
    copy.failures += 1
    kept = store.find("k", session.id)
    assert kept.turns == [{"role": "user", "content": "问题"}] and kept.intents == [] and kept.entities == {}
    assert kept.failures == 0


# -- response cache ---------------------------------------------------------------------------------------------------

def test_an_answer_cached_by_one_replica_is_a_hit_on_another(replicas):
    (one, two), prefix = replicas
    hits = []
    a = RedisResponseCache(one, prefix)
    b = RedisResponseCache(two, prefix, on_hit=lambda: hits.append(1))
    assert a.put("请问SL-10001多少钱？", "¥399", "light")
    hit = b.get("sl-10001 多少钱呢!")
    assert hit is not None and (hit.answer, hit.path) == ("¥399", "light") and hits == [1]
    assert b.get("SL-10002多少钱") is None  # another SKU: another key, as in process
    assert not a.put("我的订单到哪了", "已发货", "light", personal=True) and b.get("我的订单到哪了") is None
    assert not a.put("您好，在吗？", "在的", "full")  # filler is never shared
    b.set_kg_version("v2")  # a new KG: the old answers are not read again
    assert b.get("请问SL-10001多少钱？") is None


def test_the_shared_cache_has_the_in_process_ttl_and_bound(replicas):
    (one, _), prefix = replicas
    cache = RedisResponseCache(one, prefix, ttl_s=0.3, max_entries=2)
    for question in ("问题一", "问题二", "问题三"):
        cache.put(question, "答", "light")
    assert len(cache) == 2 and cache.get("问题一") is None and cache.get("问题三") is not None
    time.sleep(0.5)
    assert cache.get("问题三") is None and len(cache) == 0
    assert not one.keys(f"{prefix}:cache:*")  # the entries themselves are gone, not only unindexed


# -- single flight ----------------------------------------------------------------------------------------------------

class _SlowEngine:
    """A slow engine counting its generations (shared by the two services: a count across replicas)."""

    name = "slow"

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def models(self):
        return ["tiny"]

    async def stream(self, messages, *, model=None, max_new_tokens=None, temperature=0.0):
        self.calls += 1
        await asyncio.sleep(0.3)
        if self.fail and self.calls == 1:
            from kefu.serve.engine import EngineError

            raise EngineError("model down")
        yield "山岚冲锋衣防水透气，适合秋冬徒步。"


def _service(engine, metrics: Metrics | None = None) -> ChatService:
    """A service built on the state backend in force, as ``build_service`` does."""
    config = ServeConfig(max_new_tokens=8)
    metrics = metrics or Metrics()
    return ChatService(engine, config=config, base_model="tiny", retriever=fake_retriever,
                       order_lookup=fake_order_lookup, metrics=metrics, **serving_state(config, metrics))


QUESTION = "山岚冲锋衣适合冬天徒步穿吗"


def test_the_same_question_on_two_replicas_is_generated_once(shared_state):
    engine = _SlowEngine()
    a, b = _service(engine), _service(engine)
    assert isinstance(a.flights, RedisSingleFlight) and isinstance(a.cache, RedisResponseCache)

    async def ask():
        return await asyncio.gather(a.answer([{"role": "user", "content": QUESTION}], customer_id="C1"),
                                    b.answer([{"role": "user", "content": QUESTION}], customer_id="C2"))

    replies = asyncio.run(ask())
    assert engine.calls == 1 and sorted(r.path for r in replies) == ["cache", "full"]
    assert len({r.text for r in replies}) == 1 and not len(a.flights) and not len(b.flights)


def test_when_the_leading_replica_fails_the_other_generates_itself(shared_state):
    engine = _SlowEngine(fail=True)
    a, b = _service(engine), _service(engine)

    async def ask():
        first = asyncio.create_task(a.answer([{"role": "user", "content": QUESTION}], customer_id="C1"))
        await asyncio.sleep(0.05)  # the first replica leads
        return await asyncio.gather(first, b.answer([{"role": "user", "content": QUESTION}], customer_id="C2"))

    led, followed = asyncio.run(ask())
    assert led.fallback and not followed.fallback and followed.path == "full" and engine.calls == 2


def test_a_dead_leaders_flight_ends_with_its_lease(replicas):
    (one, two), prefix = replicas

    async def run():
        dead = RedisSingleFlight(one, prefix, lease_s=0.3)
        alive = RedisSingleFlight(two, prefix, lease_s=0.3)
        assert await dead.join("k") == (True, None)  # its replica is killed: it never finishes
        started = time.monotonic()
        assert await alive.join("k") == (False, None)  # waits out the lease, then generates itself
        return time.monotonic() - started

    assert 0.1 < asyncio.run(run()) < 2


# -- rate limits ------------------------------------------------------------------------------------------------------

def test_the_rate_limit_is_one_bucket_across_replicas(replicas):
    (one, two), prefix = replicas
    a = RedisTokenBucketLimiter(one, prefix, rate=1.0, burst=5)
    b = RedisTokenBucketLimiter(two, prefix, rate=1.0, burst=5)
    waits = [(a if i % 2 else b).acquire("key-1") for i in range(6)]
    assert waits[:5] == [0.0] * 5 and 0.5 < waits[5] <= 1.0  # the burst is counted globally
    assert a.acquire("key-2") == 0.0  # another key has its own bucket
    time.sleep(1.1)
    assert b.acquire("key-1") == 0.0  # refilled at the rate
    ttl = one.pttl(f"{prefix}:ratelimit:key-1")
    assert 0 < ttl <= 6000  # the bucket is deleted once it would be full again


# -- the embedded default ---------------------------------------------------------------------------------------------

def test_the_embedded_default_keeps_its_state_in_process(monkeypatch):
    from kefu import state

    for name in (state.BACKEND_ENV, state.DATABASE_URL_ENV, state.REDIS_URL_ENV, state.REDIS_PREFIX_ENV):
        monkeypatch.delenv(name, raising=False)
    service = _service(None)
    assert type(service.sessions) is SessionStore and type(service.cache) is ResponseCache
    assert type(service.flights) is SingleFlight and type(rate_limiter(service.config)) is TokenBucketLimiter


def test_the_postgres_backend_keeps_it_in_redis_with_the_configured_bounds(shared_state):
    config = ServeConfig(max_sessions=7, max_turns_per_session=9, cache_ttl_s=60, cache_max_entries=11,
                         rate_limit_per_s=3, rate_limit_burst=4)
    parts = serving_state(config, Metrics())
    sessions, cache, limiter = parts["sessions"], parts["cache"], rate_limiter(config)
    assert (sessions.max_sessions, sessions.max_turns, sessions.prefix) == (7, 9, shared_state["KEFU_REDIS_PREFIX"])
    assert (cache.ttl_s, cache.max_entries, cache.prefix) == (60, 11, shared_state["KEFU_REDIS_PREFIX"])
    assert isinstance(limiter, RedisTokenBucketLimiter) and (limiter.rate, limiter.burst) == (3, 4)
