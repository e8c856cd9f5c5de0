"""Fact-like spans in shop text — the claims a reply makes that the shop's data must back.

``claims(text)`` finds, without overlaps: order numbers (16 digits, also typed in groups), tracking numbers, amounts
of money (integer fen), discounts, dates and clock times, numbers with units (10000mm, 350g, 7天, 3件), status words,
and any other Arabic number. Each carries a ``key`` that says what it asserts independent of wording: ``¥599`` and
``599.00元`` are both ``money:59900``; ``1万毫米`` and ``10000mm`` are both ``qty:10000:mm``. A reply is checked by
looking its keys up in the keys of the facts it was given (``evidence_keys``), which also hold the plain numbers of
those facts, so "防水指数10000" matches a fact "防水指数10000mm".

Chinese numerals count only with a unit (三件, 七天): alone they are words (一下, 一起, 十分).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

from kefu.text.numbers import DISCOUNT, MONEY, NUMBER, cn_decimal, money_fen, parse_discount
from kefu.text.status import STATUS_WORDS

__all__ = ["Claim", "claims", "evidence_keys", "ORDER_NO", "TRACKING_NO", "DATE", "order_numbers", "date_parts"]

# 16 digits, also as typed in chat: 26110899 53055203 or 2611-0899-5305-5203 (two phone numbers side by side are
# not an order number)
ORDER_NO = re.compile(r"(?<![\d-])(?:\d{16}|\d{8}[ -]\d{8}|\d{4}(?:[ -]\d{4}){3})(?![\d-])")
# carrier prefix + digits (SF123456789012, YT1234567890123), or 12-15 bare digits (中通)
# the carrier prefix in either case (customers type sf829657249208); read it upper-cased
TRACKING_NO = re.compile(r"(?<![A-Za-z0-9])((?i:[A-Z]{2,4})\d{9,15}|\d{12,15})(?![0-9])")
# canonical unit -> the ways shop text writes it (longest first when compiled)
UNITS: dict[str, tuple[str, ...]] = {
    "mm": ("mm", "毫米"), "cm": ("cm", "厘米", "公分"), "m": ("米",), "g/㎡/24h": ("g/㎡/24h", "g/m²/24h", "g/m2/24h"),
    "g": ("g", "克"), "kg": ("kg", "千克", "公斤"), "斤": ("斤",), "ml": ("ml", "mL", "毫升"), "L": ("L", "升"),
    "工作日": ("个工作日", "工作日"), "天": ("天",), "小时": ("个小时", "小时", "h"), "分钟": ("分钟",),
    "个月": ("个月",), "年": ("年",), "周": ("周", "个星期", "星期"), "%": ("%", "％"), "℃": ("℃", "度"),
    "蓬": ("蓬",), "D": ("D",), "件": ("件",), "双": ("双",), "个": ("个",), "只": ("只",), "套": ("套",),
    "瓶": ("瓶",), "次": ("次",), "码": ("码",),
}
COUNT_UNITS = frozenset({"件", "双", "个", "只", "套", "瓶", "次"})
_UNIT_OF = {alias: unit for unit, aliases in UNITS.items() for alias in aliases}
_UNIT_RE = "|".join(re.escape(a) for a in sorted(_UNIT_OF, key=len, reverse=True))
QUANTITY = re.compile(rf"(?P<n>{NUMBER})\s*(?P<u>{_UNIT_RE})(?![A-Za-z])")
DATE = re.compile(r"(?<![\d.])(?:(?P<y>\d{4})\s*[-/年.]\s*(?P<m>\d{1,2})\s*[-/月.]\s*(?P<d>\d{1,2})(?!\d)\s*[日号]?"
                  r"|(?P<m2>\d{1,2})\s*月\s*(?P<d2>\d{1,2})(?!\d)\s*[日号]?"
                  r"|(?P<m3>\d{1,2})[-/](?P<d3>\d{2})(?![\d.]|\s*(?:天|日|个|工作日|小时|件|%)))")
CLOCK = re.compile(r"(?<!\d)(?P<h>[01]?\d|2[0-3])[:：](?P<min>[0-5]\d)(?!\d)")
DISCOUNT_RE = re.compile(DISCOUNT)
ARABIC = re.compile(r"(?<![\d.A-Za-z])\d+(?:,\d{3})*(?:\.\d+)?(?![\d.A-Za-z])")  # not X1, 3XL, 20D
SKU = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,4}-\d{3,6}(?!\d)")
STATUS = re.compile("|".join(sorted(STATUS_WORDS, key=len, reverse=True)))
SLOT = re.compile(r"\[[^\[\]\s\d]{1,12}\]")  # [订单号], JDDC's [金额x]: a slot or a placeholder, not a fact ([1] is a figure)


@dataclass(frozen=True, slots=True)
class Claim:
    """One fact-like span: ``kind`` (sku, order_no, tracking_no, money, discount, date, time, qty, status, number), its
    wording-independent ``key``, and where it stands in the text."""

    kind: str
    key: str
    text: str
    start: int
    end: int


def _number(value: Decimal) -> str:
    """A number's canonical spelling: 10000, 0.5, 8.5 (no trailing zeros, no exponent)."""
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def order_numbers(text: str) -> list[str]:
    """The order numbers in ``text``, separators removed."""
    return [re.sub(r"[ -]", "", m.group()) for m in ORDER_NO.finditer(text)]


def date_parts(m: re.Match) -> tuple[int | None, int, int] | None:
    """A :data:`DATE` match as ``(year or None, month, day)``; None when the month or day is out of range."""
    year = m.group("y")
    month = int(m.group("m") or m.group("m2") or m.group("m3"))
    day = int(m.group("d") or m.group("d2") or m.group("d3"))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return (int(year) if year else None), month, day


def claims(text: str) -> list[Claim]:
    """Every fact-like span of ``text``, left to right, none overlapping (more specific kinds win)."""
    found: list[Claim] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(kind: str, key: str, m: re.Match, group: int | str = 0) -> None:
        start, end = m.span(group)
        if free(start, end):
            found.append(Claim(kind, key, m.group(group), start, end))
            taken.append((start, end))

    for m in SLOT.finditer(text):
        taken.append(m.span())
    for m in SKU.finditer(text):
        add("sku", "sku:" + m.group(), m)
    for m in ORDER_NO.finditer(text):
        add("order_no", "order_no:" + re.sub(r"[ -]", "", m.group()), m)
    for m in TRACKING_NO.finditer(text):
        add("tracking_no", "tracking_no:" + m.group(1).upper(), m, 1)
    for m in MONEY.finditer(text):
        fen = money_fen(m)
        if fen is not None:
            add("money", f"money:{fen}", m)
    for m in DISCOUNT_RE.finditer(text):
        rate = parse_discount(m.group())
        if rate is not None:
            add("discount", f"discount:{rate}", m)
    for m in DATE.finditer(text):
        parts = date_parts(m)
        if parts is not None:
            add("date", f"date:{parts[1]}-{parts[2]}", m)
    for m in CLOCK.finditer(text):
        add("time", f"time:{int(m.group('h'))}:{m.group('min')}", m)
    for m in QUANTITY.finditer(text):
        value = cn_decimal(m.group("n"))
        unit = _UNIT_OF[m.group("u")]
        if value is None or (unit in COUNT_UNITS and value <= 1):
            continue  # 一件/一个: an article, not a figure
        add("qty", f"qty:{_number(value)}:{unit}", m)
    for m in STATUS.finditer(text):
        add("status", "status:" + m.group(), m)
    for m in ARABIC.finditer(text):
        value = cn_decimal(m.group())
        if value is not None:
            add("number", f"number:{_number(value)}", m)
    found.sort(key=lambda c: c.start)
    return found


def _plain_numbers(claim: Claim) -> Iterable[str]:
    """The bare numbers a claim also backs: a fact ``10000mm`` backs a reply's ``10000``; ``¥599`` backs ``599``."""
    kind, _, rest = claim.key.partition(":")
    if kind == "qty":
        yield "number:" + rest.split(":")[0]
    elif kind == "money":
        yield "number:" + _number(Decimal(int(rest)) / 100)
    elif kind == "discount":
        yield "number:" + rest
    elif kind == "date":
        month, day = rest.split("-")
        yield from (f"number:{month}", f"number:{day}")
    elif kind in ("order_no", "tracking_no"):
        yield "number:" + rest
        digits = re.sub(r"\D", "", rest)
        yield "number:" + _number(Decimal(digits[-4:]))  # "尾号3456"


def evidence_keys(texts: Iterable[str]) -> set[str]:
    """The claim keys that ``texts`` (fact lines, tool results, the customer's own words) back."""
    keys: set[str] = set()
    for text in texts:
        for claim in claims(text):
            keys.add(claim.key)
            keys.update(_plain_numbers(claim))
    return keys
