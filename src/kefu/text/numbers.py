"""Chinese and Arabic numbers, money and discounts: the one parser and formatter every stage uses.

Money is integer fen. ``cn_number`` reads one whole token (``三百五`` → 350, ``1.2万`` → 12000, ``二零二六`` → 2026);
``parse_money_fen`` reads one amount (``¥1,299.00`` → 129900); ``money_mentions`` finds amounts in running text (a
currency sign or 元/块/圆 is required, bare numbers are not money); ``parse_discount`` reads 九五折 → 95 (percent
payable); ``format_fen`` writes fen back as yuan.
"""

from __future__ import annotations

import re
from decimal import InvalidOperation, ROUND_HALF_UP, Decimal

__all__ = ["CN_DIGITS", "NUMERAL_CHARS", "NUMBER", "MONEY", "DISCOUNT", "cn_number", "cn_decimal", "parse_money_fen",
           "money_fen", "money_mentions", "parse_discount", "discount_mentions", "format_fen"]

CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9, "壹": 1, "贰": 2, "叁": 3, "肆": 4, "伍": 5, "陆": 6, "柒": 7, "捌": 8, "玖": 9}
_SMALL_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_BIG_UNITS = {"万": 10_000, "亿": 100_000_000}
_CN_CHARS = "".join(CN_DIGITS) + "".join(_SMALL_UNITS) + "".join(_BIG_UNITS)
NUMERAL_CHARS = "0123456789" + _CN_CHARS  # every character a number token can start with
_ARABIC = r"\d+(?:,\d{3})*(?:\.\d+)?"
_ARABIC_RE = re.compile(_ARABIC)

# One number token (no capture groups, so it can be embedded): the whole run of Arabic digits (thousands commas,
# decimals) and Chinese numerals and units, e.g. 299, 1,299.00, 1.2万, 三百五; cn_decimal() decides whether it reads.
# One character per step and possessive: linear time, and never a shorter piece of a longer number.
NUMBER = rf"(?<![\d.,{_CN_CHARS}])[\d{_CN_CHARS}](?:[\d{_CN_CHARS}]|[.,](?=\d))*+"
_PREFIX = r"(?:[¥￥]|RMB|人民币)"
_SUFFIX = r"(?:元|块钱|块|圆)"
# An amount of money in running text: a currency sign before or 元/块/圆 after the number (or both). Read a match
# with money_fen(); its groups are a/sa (signed form) and b/sb (unit form), so it embeds in a larger regex.
MONEY = re.compile(rf"{_PREFIX}\s*(?P<a>{NUMBER})(?:\s*(?P<sa>{_SUFFIX}))?|(?P<b>{NUMBER})\s*(?P<sb>{_SUFFIX})")
_CN_DISCOUNT_DIGITS = "一二三四五六七八九"
# A discount in running text: 8折, 8.5折, 85折, 八折, 八五折.
DISCOUNT = rf"(?<![\d.])\d{{1,2}}(?:\.\d)?\s*折|[{_CN_DISCOUNT_DIGITS}][{_CN_DISCOUNT_DIGITS}]?折"
_DISCOUNT_RE = re.compile(DISCOUNT)


def _tokens(text: str) -> list[tuple[str, Decimal | int]] | None:
    """``text`` as ("n", value) number, ("z", 0) 零 and ("u", multiplier) unit tokens; None on any other character."""
    out: list[tuple[str, Decimal | int]] = []
    i = 0
    while i < len(text):
        m = _ARABIC_RE.match(text, i)
        if m:  # any decimal digits, full-width ones too (Decimal reads them)
            out.append(("n", Decimal(m.group().replace(",", ""))))
            i = m.end()
            continue
        ch = text[i]
        if ch in CN_DIGITS:
            out.append(("n", CN_DIGITS[ch]) if ch not in "零〇" else ("z", 0))
        elif ch in _SMALL_UNITS:
            out.append(("u", _SMALL_UNITS[ch]))
        elif ch in _BIG_UNITS:
            out.append(("u", _BIG_UNITS[ch]))
        else:
            return None
        i += 1
    return out


def cn_decimal(text: str) -> Decimal | None:
    """The value of one number token, Chinese and/or Arabic (``1.2万`` → 12000, ``8.5`` → 8.5); None if it is not one.

    Colloquial tails count in the unit below the last one (三百五 = 350, 两千五 = 2500, 一万二 = 12000) unless a 零
    came first (一百零五 = 105). Chinese digits without units read digit by digit (二零二六 = 2026), except two
    without a 零, which are a range (两三天) and not a number.
    """
    text = text.strip()
    tokens = _tokens(text) if text else None
    if not tokens:
        return None
    kinds = "".join(kind for kind, _ in tokens)
    if "u" not in kinds:
        if len(tokens) == 1:
            return Decimal(tokens[0][1])
        if any(isinstance(v, Decimal) for _, v in tokens):
            return None  # Arabic mixed with 一二
        if len(tokens) == 2 and "z" not in kinds:
            return None  # 两三, 七八: a range (两三天), not 23
        return Decimal("".join(str(v) for _, v in tokens))  # 二零二六 read digit by digit
    total = Decimal(0)  # whole 亿 groups
    wan = Decimal(0)  # the 万 group below them
    section = Decimal(0)  # below 万
    digit: Decimal | None = None
    small_last = 10_000  # the last small unit in this section: they must go down (千 > 百 > 十)
    last_unit = 0  # the unit just before a trailing digit, for colloquial tails
    after_zero = False
    for kind, value in tokens:
        if kind == "z":
            if digit is not None:
                return None
            after_zero = True
            continue
        if kind == "n":
            if digit is not None:
                return None  # two numbers in a row (一二百)
            digit = Decimal(value)
            continue
        unit = int(value)
        if unit < 10_000:
            if unit >= small_last:
                return None
            section += (Decimal(1) if digit is None else digit) * unit
            small_last = unit
        elif unit == 10_000:
            if wan:
                return None
            group = section + (digit or 0)
            wan = (group or Decimal(1)) * unit
            section, small_last = Decimal(0), 10_000
        else:
            group = wan + section + (digit or 0)
            total += (group or Decimal(1)) * unit
            wan, section, small_last = Decimal(0), Decimal(0), 10_000
        digit, last_unit, after_zero = None, unit, False
    if digit is not None:
        if last_unit >= 100 and not after_zero and 0 < digit < 10 and digit == digit.to_integral_value():
            digit *= last_unit // 10  # 三百五, 两千五, 一万二
        section += digit
    return total + wan + section


def cn_number(text: str) -> int | None:
    """One whole token of Chinese and/or Arabic numerals as an int (``三百五`` → 350, ``二十万`` → 200000,
    ``1.2万`` → 12000, ``299`` → 299); None when it is not a number or not a whole one (``8.5``)."""
    value = cn_decimal(text)
    if value is None or value != value.to_integral_value():
        return None
    return int(value)


def _to_fen(yuan: Decimal) -> int | None:
    """Yuan to integer fen, half up; None for an amount past Decimal's precision (a run of 27+ digits is no price)."""
    try:
        return int((yuan * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation:
        return None


def parse_money_fen(text: str) -> int | None:
    """One amount of money (``¥1,299.00``, ``599元``, ``1.2万元``, ``三百五十元``, a bare ``49.9``) in integer fen;
    None when ``text`` is not one amount."""
    m = re.fullmatch(rf"\s*{_PREFIX}?\s*(.+?)\s*{_SUFFIX}?\s*", text)
    value = cn_decimal(m.group(1)) if m else None
    return None if value is None else _to_fen(value)


def money_fen(m: re.Match) -> int | None:
    """The fen of one ``MONEY`` match; None when its number does not read or it is one Chinese digit before a bare 块
    (一块去, 两块布 are not money)."""
    number = m.group("a") or m.group("b")
    if m.group("sb") == "块" and number in ("一", "两", "俩"):
        return None
    value = cn_decimal(number)
    return None if value is None else _to_fen(value)


def money_mentions(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, fen)`` of every amount of money in ``text``: a currency sign (¥, RMB, 人民币) before or 元/块/圆
    after the number; bare numbers are not money."""
    out = []
    for m in MONEY.finditer(text):
        fen = money_fen(m)
        if fen is not None:
            out.append((m.start(), m.end(), fen))
    return out


def parse_discount(text: str) -> int | None:
    """A discount as the percent still payable: 九五折 → 95, 八折 → 80, 8折 → 80, 8.5折 → 85, 85折 → 85; None
    when ``text`` is not one (the 折 is optional)."""
    token = text.strip().removesuffix("折").strip()
    if re.fullmatch(r"\d\.\d|\d", token):
        rate = round(float(token) * 10)
    elif re.fullmatch(r"\d\d", token):
        rate = int(token)
    elif re.fullmatch(rf"[{_CN_DISCOUNT_DIGITS}]{{1,2}}", token):
        rate = CN_DIGITS[token[0]] * 10 + (CN_DIGITS[token[1]] if len(token) == 2 else 0)
    else:
        return None
    return rate if 0 < rate < 100 else None


def discount_mentions(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, percent payable)`` of every discount (八五折, 8.5折) in running text."""
    out = []
    for m in _DISCOUNT_RE.finditer(text):
        rate = parse_discount(m.group())
        if rate is not None:
            out.append((m.start(), m.end(), rate))
    return out


def format_fen(fen: int, *, short: bool = False) -> str:
    """Integer fen as yuan, exact: ``12345`` → ``'123.45'``, ``-150`` → ``'-1.50'``. ``short`` drops zero cents the
    way shops write amounts: ``30000`` → ``'300'``, ``29950`` → ``'299.5'``."""
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    text = f"{sign}{fen // 100}.{fen % 100:02d}"
    return text.rstrip("0").rstrip(".") if short else text
