"""Batch masking (mask_many) gives exactly what mask gives turn by turn; the hint search never skips a turn that
masking would change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kefu.data import pii
from kefu.data.pii import JDDC_PLACEHOLDERS, PLACEHOLDERS, Masker, mask, mask_many

from .test_pii import NEAR_MISSES, POSITIVES

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop" / "dialogues.jsonl"

KEEP = ("浙江省杭州市余杭区仓前街道良睦路1399号", "0571-88886666")
MASKERS = [pii._default(), Masker(keep=KEEP), Masker(types=["mobile", "address", "order_no"]), Masker(types=["name"]),
           Masker(types=["email"])]

FRAGMENTS = ([p[0] for p in POSITIVES] + NEAR_MISSES + list(PLACEHOLDERS.values()) + list(JDDC_PLACEHOLDERS)
             + ["[数字x]", "[金额x]", "[订单编号:", "]", "[", "，", "、", "：", " ", "\n", "\r", "王伟", "李秀英", "寄到",
                "地址", "我是", "收件人", "先生", "3单元", "12-3-401", "8F", "路", "号", "138", "0013", "@", "微信",
                "\x00", "\x00\x00", "", "好的亲", "😀", "\ud800", KEEP[0], KEEP[1]])

texts_strategy = st.lists(
    st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=5).map("".join), st.text(max_size=8)), max_size=12)


def _same(masker: Masker, texts: list[str]) -> None:
    got = masker.mask_many(texts)
    assert got == [masker.mask(t) for t in texts]
    assert all(type(r) is tuple and len(r) == 2 for r in got)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_strategy, st.sampled_from(range(len(MASKERS))))
def test_mask_many_is_mask_on_each(texts, which):
    _same(MASKERS[which], texts)
    if which == 0:
        assert mask_many(texts) == [mask(t) for t in texts]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join), st.sampled_from(range(len(MASKERS))))
def test_hint_search_never_skips_work(text, which):
    """Where the one hint search fails, the full passes find nothing to mask either (it is only a shortcut)."""
    masker = MASKERS[which]
    if masker._any.search(text) is None:
        assert all(sp.type == "_keep" for sp in masker._spans_hinted(text))
        assert masker._mask_hinted(text) == (text, {})


def test_mask_many_edge_cases():
    assert mask_many([]) == []
    assert mask_many([""]) == [("", {})]
    texts = ["电话13812345678", "", "\x00", "订单号2611202883143667\x00手机13812345678", "好的", "电话13812345678"]
    _same(pii._default(), texts)
    _same(pii._default(), ("电话13812345678", "好的"))  # any sequence


def test_mask_many_results_do_not_share_counts():
    out = mask_many(["电话13812345678"] * 3 + ["好的"] * 2)
    assert out[0] == out[1] == out[2] == ("电话[手机号]", {"[手机号]": 1})
    out[0][1]["[手机号]"] = 99
    assert out[1][1] == {"[手机号]": 1} and out[2][1] == {"[手机号]": 1}
    out[3][1]["x"] = 1
    assert out[4][1] == {}


def _shop_turns() -> list[str]:
    return [m["content"] for line in SHOP.read_text(encoding="utf-8").splitlines() if line.strip()
            for m in json.loads(line)["messages"]]


@pytest.mark.parametrize("batch", [1, 7, 1000, 100_000])
def test_mask_many_on_the_sample_shop(batch):
    turns = _shop_turns()
    assert len(turns) > 2000
    expected = [mask(t) for t in turns]
    got = [r for i in range(0, len(turns), batch) for r in mask_many(turns[i:i + batch])]
    assert got == expected
    assert sum(bool(c) for _, c in got) > 400


def test_mask_many_on_jddc(shared_data):
    rows = [ln.split("\t") for ln in (shared_data / "jddc2019" / "chat_0.1per.txt").read_text(
        encoding="utf-8").splitlines()]
    texts = [r[6] for r in rows if len(r) >= 7]
    assert len(texts) > 10000
    for masker in MASKERS[:3]:
        expected = [masker.mask(t) for t in texts]
        got = [r for i in range(0, len(texts), 1000) for r in masker.mask_many(texts[i:i + 1000])]
        assert got == expected
    assert sum(bool(c) for _, c in expected) > 500
