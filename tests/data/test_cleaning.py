"""Normalisation, quality filters, annotations, dedup, splits and tier-3 generators, one unit at a time."""

from __future__ import annotations

import numpy as np
import pytest

from kefu.data import augment as aug
from kefu.data.annotate import Catalogue, RuleAnnotator, trie_regex
from kefu.data.config import FilterConfig, NormalizeConfig, PrepareConfig
from kefu.data.dedup import Deduplicator, MinHasher, exact_key
from kefu.data.normalize import clean_turns, garbled_ratio, normalize_text, quality_reason
from kefu.data.split import assign_split
from kefu.data.taxonomy import ENTITY_TYPES, INTENTS
from kefu.types import Entity, Turn

NORM = NormalizeConfig()


def test_greetings_are_stripped_from_customer_turns_only():
    assert normalize_text("亲，您好！请问XL码有货吗", "user", NORM) == "XL码有货吗"
    assert normalize_text("亲，您好！XL码有货的", "assistant", NORM) == "亲，您好！XL码有货的"
    assert normalize_text("你好", "user", NORM) == "你好"  # nothing else left: keep the greeting
    assert normalize_text("亲子装有吗", "user", NORM) == "亲子装有吗"  # 亲 is a greeting only on its own
    assert normalize_text("亲在吗？hi，XL有吗", "user", NORM) == "XL有吗"
    assert normalize_text("请问XL码有货吗", "user", NORM.model_copy(update={"strip_greetings": False})) == "请问XL码有货吗"


def test_width_emoji_whitespace_and_traditional():
    assert normalize_text("ＸＬ码　１２３😊  好的", "assistant", NORM) == "XL码 123 好的"
    assert normalize_text("好的😊", "assistant", NORM.model_copy(update={"emoji": "keep"})) == "好的😊"
    assert normalize_text("後來的衣服", "assistant", NORM.model_copy(update={"traditional_to_simplified": True})) == \
        "后来的衣服"
    assert normalize_text("，。！", "assistant", NORM) == "，。！"  # Chinese punctuation is kept


def test_clean_turns_drops_null_merges_and_trims():
    turns = [Turn("user", "在吗"), Turn("user", "NULL"), Turn("user", "订单发货了吗"), Turn("assistant", " "),
             Turn("assistant", "已发货"), Turn("assistant", "顺丰"), Turn("user", "好的")]
    assert [(t.role, t.content) for t in clean_turns(turns, NORM)] == [
        ("user", "在吗 订单发货了吗"), ("assistant", "已发货 顺丰")]


def test_quality_reasons():
    f = FilterConfig(max_chars=50)
    ok = [Turn("user", "有货吗"), Turn("assistant", "有的亲")]
    assert quality_reason(ok, f) is None
    assert quality_reason([], f) == "empty"
    assert quality_reason([Turn("user", "在吗")], f) == "no_agent_reply"
    assert quality_reason([Turn("assistant", "您好")], f) == "no_customer_turn"
    assert quality_reason([Turn("user", "?"), Turn("assistant", "嗯")], f) == "too_short"
    assert quality_reason([Turn("user", "长" * 40), Turn("assistant", "长" * 40)], f) == "too_long"
    mojibake = "我想问一下订单什么时候发货".encode("utf-8").decode("gbk", errors="replace")
    assert garbled_ratio(mojibake) > 0.1 and garbled_ratio("我想问一下订单什么时候发货") == 0
    assert quality_reason([Turn("user", mojibake), Turn("assistant", mojibake)], f) == "garbled"
    latin = "退款什么时候到账".encode("utf-8").decode("latin-1")
    assert quality_reason([Turn("user", latin), Turn("assistant", latin)], FilterConfig()) == "garbled"


def test_trie_regex_prefers_longest():
    import re

    pattern = re.compile(trie_regex(["冲锋", "冲锋衣", "冲锋裤", "羽绒服"]))
    assert [m.group() for m in pattern.finditer("冲锋衣和冲锋裤还是冲锋")] == ["冲锋衣", "冲锋裤", "冲锋"]


@pytest.mark.parametrize("text,expected", [
    ("满300减50的活动还能用吗", ("promotion", "满300减50", "full_reduction:30000:5000")),
    ("每满200减20", ("promotion", "每满200减20", "per_full_reduction:20000:2000")),
    ("现在打八五折吗", ("promotion", "八五折", "discount:85")),
    ("全场85折", ("promotion", "85折", "discount:85")),
    ("有没有赠品", ("promotion", "赠品", "赠品")),
    ("这件299元", ("money", "299元", "29900")),
    ("¥49.9包邮吗", ("money", "¥49.9", "4990")),
    ("三百块能买吗", ("money", "三百块", "30000")),
    ("三百五十元能买吗", ("money", "三百五十元", "35000")),
    ("预算1.2万元", ("money", "1.2万元", "1200000")),
    ("买两件", ("quantity", "两件", "2")),
    ("订单号1234567890123456", ("order_no", "订单号1234567890123456", "1234567890123456")),
    ("我的[订单号]呢", ("order_no", "[订单号]", None)),
    ("单号SF1234567890123", ("logistics", "SF1234567890123", "SF1234567890123")),
    ("发的顺丰吗", ("logistics", "顺丰", "顺丰速运")),
    ("11月11日能到吗", ("time", "11月11日", "--11-11")),
    ("明天能发吗", ("time", "明天", "+1d")),
    ("3天内发货", ("time", "3天内", "P3D")),
    ("要XL码", ("size", "XL", "XL")),
    ("42码有吗", ("size", "42码", "42")),
    ("黑色的还有吗", ("color", "黑色", "黑色")),
    ("是纯棉的吗", ("material", "纯棉", "纯棉")),
    ("冲锋衣防水吗", ("category", "冲锋衣", "冲锋衣")),
    ("北面的吗", ("brand", "北面", "北面")),
])
def test_rule_entities(text, expected):
    found = [(e.type, e.text, e.value) for e in RuleAnnotator().entities(text, 0)]
    assert expected in found, found
    for e in RuleAnnotator().entities(text, 0):
        assert text[e.start:e.end] == e.text and e.type in ENTITY_TYPES


@pytest.mark.parametrize("text,intent", [
    ("退款什么时候到账", "refund_status"), ("我要退货", "return_request"), ("XL码小了想换L", "exchange_request"),
    ("快递到哪了", "logistics_tracking"), ("物流好几天不动了", "logistics_delay"), ("显示签收但没收到", "logistics_lost"),
    ("收到的杯子碎了", "logistics_damaged"), ("地址填错了能改吗", "address_change"), ("能开发票吗", "invoice"),
    ("转人工", "human_handoff"), ("我要投诉", "complaint"), ("满300减50能和优惠券一起用吗", "promotion_inquiry"),
    ("多少钱", "price_inquiry"), ("买完就降价了能补差价吗", "price_inquiry"), ("黑色还有货吗", "stock_inquiry"),
    ("身高175穿什么码", "size_recommendation"), ("推荐一款冲锋衣", "product_recommendation"),
    ("这个面料防水吗", "product_inquiry"), ("付款失败怎么办", "payment"), ("拉链坏了能修吗", "repair_request"),
    ("谢谢", "greeting"), ("今天天气不错", "other"),
])
def test_rule_intents(text, intent):
    assert RuleAnnotator().intent(text) == intent
    assert intent in INTENTS


def test_catalogue_and_annotator_protocol(tmp_path):
    cat_file = tmp_path / "p.csv"
    cat_file.write_text("sku,name,aliases,category,brand,colors,sizes,material\n"
                        "SL-1,云径冲锋衣,云径,冲锋衣,山岚,雾霾蓝|砖红,M|L|均码,尼龙\n", encoding="utf-8")
    cat = Catalogue.from_csv(cat_file)
    assert cat.products == {"云径冲锋衣": "SL-1", "云径": "SL-1"} and cat.product_colors["SL-1"] == ["雾霾蓝", "砖红"]
    intents, entities = RuleAnnotator(cat).annotate([Turn("system", "客服"), Turn("user", "云径冲锋衣砖红M码有吗"),
                                                      Turn("assistant", "砖红M码有货")])
    assert intents == ["stock_inquiry"]
    assert ("product", "云径冲锋衣", "SL-1", 1) in {(e.type, e.text, e.value, e.turn) for e in entities}
    assert {e.turn for e in entities} == {1, 2}
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nx\n", encoding="utf-8")
    with pytest.raises(Exception, match="sku"):
        Catalogue.from_csv(bad)


def test_minhash_and_dedup():
    hasher = MinHasher(num_perm=64, shingle=3)
    base = "我的订单什么时候发货，已经等了三天了，麻烦帮我催一下仓库，谢谢。客服：已经帮您催促，预计明天发出。" * 2
    near = base.replace("三天", "四天")
    other = "这件冲锋衣是什么面料，防水指数多少，冬天穿会不会冷，有没有内胆可以拆卸的款式推荐"
    sa, sb, sc = hasher.signature(base), hasher.signature(near), hasher.signature(other)
    assert sa.dtype == np.uint32 and len(sa) == 64
    assert np.mean(sa == sb) > 0.8 and np.mean(sa == sc) < 0.2
    assert (hasher.signature(base) == sa).all()  # deterministic
    dedup = Deduplicator(threshold=0.8, num_perm=64)
    t1 = [Turn("user", base)]
    assert dedup.check(exact_key(t1), sa) is None
    assert dedup.check(exact_key(t1), sa) == "exact"
    assert dedup.check(exact_key([Turn("user", near)]), sb) == "near"
    assert dedup.check(exact_key([Turn("user", other)]), sc) is None
    assert exact_key([Turn("user", "a")]) != exact_key([Turn("assistant", "a")])


def test_split_is_deterministic_and_proportional():
    keys = [exact_key([Turn("user", f"问题{i}")]) for i in range(4000)]
    splits = [assign_split(k, 42, 0.1, 0.2) for k in keys]
    assert splits == [assign_split(k, 42, 0.1, 0.2) for k in keys]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03
    assert splits != [assign_split(k, 43, 0.1, 0.2) for k in keys]
    assert {assign_split(k, 42, 0, 0) for k in keys} == {"train"}


def _ents(turns):
    return RuleAnnotator().annotate(turns)[1]


def test_entity_swap_is_consistent_in_question_and_answer():
    turns = [Turn("user", "黑色XL码还有货吗"), Turn("assistant", "黑色XL码有货的，今天发货")]
    import random

    for seed in range(20):
        new = aug.entity_swap(turns, random.Random(seed), entities=_ents(turns))
        assert new is not None
        q, a = new[0].content, new[1].content
        swapped_color = "黑色" not in q
        assert swapped_color == ("黑色" not in a)
        assert ("XL码" in q) == ("XL码" in a)
        assert q != turns[0].content
    assert aug.entity_swap([Turn("user", "有货吗"), Turn("assistant", "有")], random.Random(0), entities=[]) is None


def test_entity_swap_uses_catalogue_values():
    import random

    cat = Catalogue(products={"云径": "SL-1"}, colors={"雾霾蓝", "砖红"}, product_colors={"SL-1": ["雾霾蓝", "砖红"]})
    turns = [Turn("user", "云径雾霾蓝有吗"), Turn("assistant", "云径雾霾蓝有货")]
    ents = RuleAnnotator(cat).annotate(turns)[1]
    new = aug.entity_swap(turns, random.Random(1), entities=ents, catalogue=cat)
    assert new is not None and [t.content for t in new] == ["云径砖红有吗", "云径砖红有货"]


def test_noise_and_paraphrase_touch_customer_turns_only():
    import random

    turns = [Turn("user", "请问快递什么时候发货，退款怎么弄"), Turn("assistant", "快递明天发货，退款请在订单页申请")]
    for fn in (aug.noise, aug.paraphrase):
        changed = [fn(turns, random.Random(s)) for s in range(10)]
        assert any(c is not None for c in changed)
        for c in changed:
            if c is not None:
                assert c[1].content == turns[1].content and c[0].content != turns[0].content


def test_injection_adds_attack_and_refusal_pair():
    import random

    turns = [Turn("user", "有货吗"), Turn("assistant", "有的"), Turn("user", "好"), Turn("assistant", "好的")]
    new = aug.injection(turns, random.Random(3))
    assert len(new) == 6 and [t.role for t in new] == ["user", "assistant"] * 3
    refusals = dict(aug.INJECTIONS)
    attack = next(t for t in new if t.content in refusals)
    assert new[new.index(attack) + 1].content == refusals[attack.content]


def test_augment_is_deterministic_and_respects_ratio():
    turns = [Turn("user", "请问黑色XL码的冲锋衣什么时候发货"), Turn("assistant", "黑色XL码今天发货")]
    ents = _ents(turns)
    key = exact_key(turns)
    one = aug.augment(turns, key, 7, 1.0, list(aug.KINDS), ents)
    assert one == aug.augment(turns, key, 7, 1.0, list(aug.KINDS), ents) and len(one) == 1
    assert len(aug.augment(turns, key, 7, 3.0, list(aug.KINDS), ents)) == 3
    assert aug.augment(turns, key, 7, 0.0, list(aug.KINDS), ents) == []
    counts = [len(aug.augment(turns, exact_key([Turn("user", str(i))]), 7, 0.3, ["injection"])) for i in range(500)]
    assert 0.2 < sum(counts) / 500 < 0.4


def test_config_validation():
    with pytest.raises(Exception, match="val_ratio"):
        PrepareConfig(val_ratio=0.6, test_ratio=0.5)
    with pytest.raises(Exception):
        PrepareConfig(format="xml")
    assert PrepareConfig(dedup={"threshold": 0.9}).dedup.threshold == 0.9


def test_entity_dataclass_offsets_survive_json():
    e = Entity("money", "299元", 0, 2, 6, "29900")
    assert (e.type, e.value) == ("money", "29900")
