"""Chinese numbers, money and discounts: every case any former copy (data/annotate, eval/business, safety/compliance,
serve/text, kg/promotions) handled, plus the colloquial forms they disagreed on."""

from __future__ import annotations

import re

import pytest

from kefu.text.numbers import (MONEY, cn_decimal, cn_number, discount_mentions, format_fen, money_fen, money_mentions,
                               parse_discount, parse_money_fen)


@pytest.mark.parametrize("text, value", [
    ("三百五", 350), ("二十万", 200000), ("两千五", 2500), ("一万二", 12000), ("1.2万", 12000), ("十五", 15),
    ("一百零五", 105), ("三千零五十", 3050), ("一千二百三十四", 1234), ("299", 299), ("两百五十", 250),
    ("三万二千", 32000), ("一", 1), ("七", 7), ("二百五十九", 259), ("一万二千", 12000), ("三百", 300), ("五十", 50),
    ("一十五", 15), ("十", 10), ("零", 0), ("二零二六", 2026), ("一亿二千万", 120_000_000), ("1,299", 1299),
    ("3万", 30000), ("3百5", 350), ("一万零二", 10002), ("一百五十五", 155), ("壹佰贰拾", 120), ("俩", 2),
])
def test_cn_number(text, value):
    assert cn_number(text) == value


@pytest.mark.parametrize("text", ["abc", "", "8.5", "一二百", "两三", "七八", "十百", "3五", "三百五十元"])
def test_cn_number_rejects(text):
    assert cn_number(text) is None


def test_cn_decimal_keeps_fractions():
    assert cn_decimal("8.5") == 8.5 and cn_decimal("1.25万") == 12500 and cn_decimal("x") is None


@pytest.mark.parametrize("text, fen", [
    ("¥1,299.00", 129900), ("599元", 59900), ("1.2万元", 1200000), ("三百五十元", 35000), ("299", 29900),
    ("49.9", 4990), ("¥49.9", 4990), ("三百块", 30000), ("RMB 1,299", 129900), ("人民币88元", 8800), ("￥0.05", 5),
    ("两块钱", 200), ("二百五十九元", 25900), ("１２３元", 12300),
])
def test_parse_money_fen(text, fen):
    assert parse_money_fen(text) == fen


@pytest.mark.parametrize("text", ["abc", "", "元", "¥", "299元299元"])
def test_parse_money_fen_rejects(text):
    assert parse_money_fen(text) is None


def test_money_mentions_in_running_text():
    text = "券后¥259，原价399元，运费8.5块，RMB 1,299"
    assert money_mentions(text) == [(2, 6, 25900), (9, 13, 39900), (16, 20, 850), (21, 30, 129900)]
    assert money_mentions("二百五十九元") == [(0, 6, 25900)]
    assert money_mentions("只要¥399元") == [(2, 7, 39900)]  # sign and unit: one amount
    assert money_mentions("399.5块") == [(0, 6, 39950)]
    assert [f for *_, f in money_mentions("一共1.2万元，定金三百五十元")] == [1200000, 35000]


def test_bare_numbers_and_pieces_are_not_money():
    assert money_mentions("订单1234567890123456，48小时发货") == []
    assert money_mentions("我们一块去，两块布") == []  # 一块/两块 without 钱 are not money
    assert money_mentions("1234567890123456元") == [(0, 17, 123456789012345600)]  # never a tail of a longer number
    assert money_mentions("49.999元") == [(0, 7, 5000)]


def test_money_regex_embeds_and_is_linear():
    big = re.compile(rf"(?P<money>{MONEY.pattern})|(?P<other>x)")
    m = big.search("价格¥299")
    assert m.lastgroup == "money" and money_fen(m) == 29900
    money_mentions(("1" * 5000 + "，") * 20)  # possessive: no backtracking over long digit runs


@pytest.mark.parametrize("text, rate", [
    ("九五折", 95), ("八五折", 85), ("8折", 80), ("8.5折", 85), ("六折", 60), ("85折", 85), ("八折", 80),
    ("9.5", 95), ("七五", 75),
])
def test_parse_discount(text, rate):
    assert parse_discount(text) == rate


@pytest.mark.parametrize("text", ["十折", "abc", "", "100折", "0折"])
def test_parse_discount_rejects(text):
    assert parse_discount(text) is None


def test_discount_mentions():
    text = "满300减80，全场八五折，8.5折，85折"
    assert [(text[a:b], r) for a, b, r in discount_mentions(text)] == [("八五折", 85), ("8.5折", 85), ("85折", 85)]


def test_format_fen():
    assert format_fen(27900) == "279.00" and format_fen(5) == "0.05" and format_fen(-150) == "-1.50"
    assert format_fen(30000, short=True) == "300" and format_fen(29950, short=True) == "299.5"
    assert format_fen(5, short=True) == "0.05" and format_fen(0, short=True) == "0"
    assert parse_money_fen(format_fen(123456)) == 123456


def test_an_amount_past_decimal_precision_is_no_money():
    """A 40-digit run in a model reply must not crash the compliance check that reads every reply."""
    assert parse_money_fen("1" * 40) is None
    assert money_mentions("满300减" + "1" * 40 + "元") == []
