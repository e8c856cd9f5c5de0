"""Checksum and shape validators: ID card, bank card (Luhn), mobile, landline, IP, carrier tracking codes.

They are what lets the masker tell PII from prices, dates and SKUs; ``_classify_digits`` types a bare digit run by
validation alone.
"""

from __future__ import annotations

import re
from datetime import date

_PROVINCE_CODES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
                             50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82})
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _ascii_digits(s: str) -> str:
    """Full-width and other Unicode decimal digits to ASCII (people type ``１３８...`` too)."""
    return s if s.isascii() else "".join(str(int(c)) if c.isdecimal() else c for c in s)


def _real_date(y: int, m: int, d: int) -> bool:
    try:
        born = date(y, m, d)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def valid_id_card(s: str) -> bool:
    """Resident ID: province code, real birth date and (18 digits) the ISO 7064 MOD 11-2 check character."""
    s = _ascii_digits(s).upper()
    if len(s) == 18:
        if not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
            return False
        if int(s[:2]) not in _PROVINCE_CODES or not _real_date(int(s[6:10]), int(s[10:12]), int(s[12:14])):
            return False
        total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS))
        return _ID_CHECK[total % 11] == s[17]
    if len(s) == 15 and s.isdigit():  # first-generation card: YYMMDD in the 20th century, no check digit
        return int(s[:2]) in _PROVINCE_CODES and _real_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))
    return False


def luhn_ok(s: str) -> bool:
    """Luhn (mod 10) checksum of a digit string."""
    total = 0
    for i, c in enumerate(reversed(s)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def valid_bank_card(s: str, context: bool = False) -> bool:
    """16-19 digits passing Luhn with a plausible issuer prefix (62/60 UnionPay, 4 Visa, 5 Mastercard, 3 JCB/Amex,
    95 old domestic); with a context word (卡号/银行卡 ...) any issuer prefix and 12-19 digits are accepted."""
    s = _ascii_digits(s)
    if not s.isdigit():
        return False
    if context:
        return 12 <= len(s) <= 19 and luhn_ok(s)
    return 16 <= len(s) <= 19 and (s[0] in "3456" or s.startswith("95")) and luhn_ok(s)


_MOBILE_RE = re.compile(r"1[3-9]\d{9}")


def valid_mobile(s: str) -> bool:
    """Mainland mobile: 11 digits starting 13-19 (an optional 86/0086 country code is stripped first)."""
    s = _ascii_digits(s)
    if len(s) == 13 and s.startswith("86"):
        s = s[2:]
    elif len(s) == 15 and s.startswith("0086"):
        s = s[4:]
    return len(s) == 11 and _MOBILE_RE.fullmatch(s) is not None


def valid_landline(s: str) -> bool:
    """Area code (010, 02x, or 0[3-9]xx) followed by a 7-8 digit local number that starts 2-9."""
    s = _ascii_digits(s)
    if len(s) < 10 or s[0] != "0" or not s.isdigit():
        return False
    area = 3 if s[1] in "12" else 4
    if s[1] == "1" and s[2] != "0":
        return False
    local = s[area:]
    return 7 <= len(local) <= 8 and local[0] in "23456789"


def _valid_ip(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and (p == "0" or not p.startswith("0")) and int(p) <= 255
                                   for p in parts) and parts[0] != "0"


_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def _valid_s10(s: str) -> bool:
    """UPU S10 postal item number (EMS international: ``EA123456785CN``) with its mod-11 check digit."""
    digits = s[2:10]
    total = sum(int(c) * w for c, w in zip(digits, _S10_WEIGHTS))
    check = 11 - total % 11
    check = 5 if check == 11 else 0 if check == 10 else check
    return str(check) == s[10]


def _date_like(d: str) -> bool:
    """8 or 14 digits that read as a date(-time) stamp: 20261111, 20261111093000."""
    if len(d) not in (8, 12, 14) or d[:2] not in ("19", "20"):
        return False
    try:
        date(int(d[:4]), int(d[4:6]), int(d[6:8]))
    except ValueError:
        return False
    return True


# Carrier-prefixed tracking numbers (SF1234567890123, JDVA..., JT..., YT...) and UPU S10 (EA123456785CN);
# the regex finds the shape, _valid_carrier_code checks the prefix.
_CARRIER_SHAPE = r"[A-Za-z](?<![A-Za-z\d][A-Za-z])[A-Za-z]{1,4}\d{9,18}(?:[A-Z]{2})?(?![A-Za-z\d])"
_CARRIER_PREFIXES = frozenset({"SF", "YT", "ZTO", "ZT", "STO", "JD", "JDVA", "JDVB", "JDVC", "JDVD", "JDVE", "JDVF",
                               "JDX", "JT", "YD", "YUNDA", "EMS", "DPK", "DBL", "LP", "KYE", "HTKY", "BEST", "UC", "TT"})
_CARRIER_PARTS = re.compile(r"([A-Za-z]+)(\d+)([A-Z]*)")


def _valid_carrier_code(code: str) -> bool:
    m = _CARRIER_PARTS.fullmatch(code)
    if m is None:
        return False
    letters, digits, trailer = m.groups()
    if trailer:
        return len(letters) == 2 and letters.isupper() and len(digits) == 9 and len(trailer) == 2 \
            and _valid_s10(code)
    return letters.upper() in _CARRIER_PREFIXES and 10 <= len(digits) <= 18


def _classify_digits(d: str) -> str | None:
    """Type of a bare digit string by validation alone (no context)."""
    n = len(d)
    if n and d[-1] in "Xx":
        return "id_card" if n == 18 and valid_id_card(d) else None
    if n == 11:
        return "mobile" if _MOBILE_RE.fullmatch(d) else ("landline" if valid_landline(d) else None)
    if n in (13, 15) and valid_mobile(d):
        return "mobile"
    if n in (15, 18) and valid_id_card(d):
        return "id_card"
    if 16 <= n <= 19 and valid_bank_card(d):
        return "bank_card"
    if d.startswith("0") and valid_landline(d):
        return "landline"
    return None
