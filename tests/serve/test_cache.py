"""Response cache: exact-entity keys (no GPTCache-style false hits), TTL, KG invalidation, per-customer refusal."""

import pytest

from kefu.serve.cache import ResponseCache
from kefu.serve.engine import EngineError
from serve_support import make_service


@pytest.mark.parametrize("first,second", [
    ("订单1234567890123456到哪了", "订单6543210987654321到哪了"),  # order number
    ("SL-10001多少钱", "SL-10002多少钱"),  # SKU
    ("这件冲锋衣XL有货吗", "这件冲锋衣L有货吗"),  # size
    ("42码的鞋有吗", "43码的鞋有吗"),  # shoe size
    ("这款有黑色吗", "这款有白色吗"),  # colour
    ("这件能退吗", "这件不能退吗"),  # negation 不
    ("收到货了", "没收到货了"),  # negation 没
    ("要发顺丰", "别发顺丰"),  # negation 别
    ("有赠品吗", "无赠品吗"),  # negation 无
])
def test_questions_differing_in_a_key_entity_never_share_an_answer(first, second):
    cache = ResponseCache()
    assert cache.put(first, "answer-1", "light")
    assert cache.get(second) is None
    assert cache.get(first).answer == "answer-1"


def test_wording_noise_still_hits():
    cache = ResponseCache()
    cache.put("请问SL-10001多少钱？", "¥399", "light")
    for variant in ("SL-10001多少钱", "sl-10001 多少钱呢!", "您好，ＳＬ－１０００１多少錢"):
        hit = cache.get(variant)
        assert hit is not None and hit.answer == "¥399", variant
    assert cache.hits == 3 and cache.misses == 0


def test_ttl_expiry_and_lru_bound():
    now = [0.0]
    cache = ResponseCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    cache.put("问题一", "a", "light")
    now[0] = 11
    assert cache.get("问题一") is None
    cache.put("问题一", "a", "light")
    cache.put("问题二", "b", "light")
    cache.put("问题三", "c", "light")
    assert len(cache) == 2 and cache.get("问题一") is None


def test_kg_version_change_invalidates():
    cache = ResponseCache()
    cache.set_kg_version("v1")
    cache.put("运费多少", "包邮", "light")
    assert cache.get("运费多少") is not None
    cache.set_kg_version("v2")
    assert cache.get("运费多少") is None and len(cache) == 0


def test_personal_answers_and_other_models_are_separate():
    hits, misses = [], []
    cache = ResponseCache(on_hit=lambda: hits.append(1), on_miss=lambda: misses.append(1))
    assert not cache.put("我的订单到哪了", "已发货", "light", personal=True)
    assert cache.get("我的订单到哪了") is None
    cache.put("运费多少", "包邮", "full", model="shop-a")
    assert cache.get("运费多少", model="shop-b") is None
    assert cache.get("运费多少", model="shop-a") is not None
    assert (len(hits), len(misses)) == (1, 2)


def test_filler_only_turns_are_not_cached():
    cache = ResponseCache()
    assert not cache.put("您好，在吗？", "在的", "full")
    assert cache.get("谢谢") is None and len(cache) == 0


class _CountingEngine:
    """A slow engine that counts its calls; the first call can fail."""

    name = "counting"

    def __init__(self, fail_first: bool = False):
        self.calls, self.fail_first = 0, fail_first

    def models(self):
        return ["tiny"]

    async def stream(self, messages, *, model=None, max_new_tokens=None, temperature=0.0):
        import asyncio

        self.calls += 1
        call = self.calls
        await asyncio.sleep(0.05)
        if self.fail_first and call == 1:
            raise EngineError("model down")
        yield "山岚冲锋衣防水透气，适合秋冬徒步。"

    async def close(self):
        pass


def _ask_together(service, question: str, n: int):
    import asyncio

    async def run():
        return await asyncio.gather(*[service.answer([{"role": "user", "content": question}], session_id=f"s{i}",
                                                     customer_id=f"C{i}") for i in range(n)])

    return asyncio.run(run())


QUESTION = "山岚冲锋衣适合冬天徒步穿吗"


def test_customers_asking_the_same_at_once_share_one_generation(tiny):
    engine = _CountingEngine()
    service = make_service(tiny, engine=engine)
    replies = _ask_together(service, QUESTION, 4)
    assert engine.calls == 1
    assert sorted(r.path for r in replies) == ["cache", "cache", "cache", "full"]
    assert len({r.text for r in replies}) == 1 and "冲锋衣" in replies[0].text
    assert not len(service.flights)  # nothing left behind


def test_when_the_shared_generation_fails_the_others_generate_themselves(tiny):
    engine = _CountingEngine(fail_first=True)
    service = make_service(tiny, engine=engine)
    replies = _ask_together(service, QUESTION, 3)
    assert [r.fallback for r in replies].count(True) == 1  # only the one whose generation failed
    assert engine.calls >= 2 and all("冲锋衣" in r.text for r in replies if not r.fallback)
    assert not len(service.flights)


def test_when_the_leading_customer_leaves_the_waiting_one_generates_itself(tiny):
    import asyncio

    engine = _CountingEngine()
    service = make_service(tiny, engine=engine)

    async def run():
        leader = service.respond([{"role": "user", "content": QUESTION}], session_id="lead", customer_id="C1")
        async for event in leader:  # the leader's generation is registered before its first event
            break
        follower = asyncio.create_task(service.answer([{"role": "user", "content": QUESTION}], session_id="wait",
                                                      customer_id="C2"))
        await asyncio.sleep(0.01)
        await leader.aclose()  # the client disconnected
        return await asyncio.wait_for(follower, 5)

    reply = asyncio.run(run())
    assert reply.path == "full" and not reply.fallback and "冲锋衣" in reply.text
    assert not len(service.flights)
