"""Response cache: exact-entity keys (no GPTCache-style false hits), TTL, KG invalidation, per-customer refusal."""

import pytest

from kefu.serve.cache import ResponseCache


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
