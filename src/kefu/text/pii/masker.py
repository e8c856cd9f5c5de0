"""PII detection and masking for Chinese customer-service text.

Every span is replaced by a typed placeholder (``[手机号]``, ``[身份证号]`` ...) so the fine-tuned model still learns
*that* a customer gave a phone number without ever seeing one. Detectors validate what they find (ID-card checksum
and birth date, Luhn for bank cards, operator prefixes for mobiles, area codes for landlines) so prices, dates,
SKUs, sizes and promotion rules survive. Names and addresses have no checksum: names need a context word
(我叫/收件人/X先生 ...) and a known surname, addresses need a chain of administrative-division components
(lexicon of provinces/cities/counties plus 镇/街道/路/号/小区/栋/室 patterns).

Speed matters (the prepare stage masks millions of turns): one search for a hint rejects most turns, one combined
regex finds every numeric/e-mail/code candidate in a single pass, and the name/address pass only runs on turns
holding one of its trigger words. ``mask_many`` masks a batch, each distinct text once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

from kefu.text import trie_regex

__all__ = ["PLACEHOLDERS", "JDDC_PLACEHOLDERS", "JDDC_KEPT", "TRIGGER_CHARS", "PiiSpan", "Masker", "find_pii", "mask",
           "mask_many", "valid_id_card", "luhn_ok", "valid_bank_card", "valid_mobile", "valid_landline"]

PLACEHOLDERS: dict[str, str] = {
    "mobile": "[手机号]",
    "landline": "[固话]",
    "id_card": "[身份证号]",
    "bank_card": "[银行卡号]",
    "email": "[邮箱]",
    "address": "[地址]",
    "name": "[姓名]",
    "order_no": "[订单号]",
    "tracking_no": "[物流单号]",
    "ip": "[IP]",
    "wechat": "[微信号]",
    "qq": "[QQ号]",
}
_TYPE_OF_PLACEHOLDER = {v: k for k, v in PLACEHOLDERS.items()}

# JDDC (JD.com dialogue corpus) was anonymised by its organiser; its PII placeholders map onto ours.
JDDC_PLACEHOLDERS: dict[str, str] = {
    "[电话x]": "[手机号]",
    "[订单x]": "[订单号]",
    "[姓名x]": "[姓名]",
    "[地址x]": "[地址]",
    "[身份证号x]": "[身份证号]",
    "[邮箱x]": "[邮箱]",
}
# JDDC placeholders that are not PII of ours: kept verbatim (any other ``[...x]`` is kept too).
JDDC_KEPT: frozenset[str] = frozenset({"[数字x]", "[金额x]", "[日期x]", "[时间x]", "[站点x]", "[组织机构x]", "[链接x]"})


class _Span(NamedTuple):
    """Internal span (a tuple: cheap to build); ``type`` "_keep" marks placeholders that are left as they are."""

    type: str
    start: int
    end: int
    text: str


@dataclass(slots=True, frozen=True)
class PiiSpan:
    """One piece of PII: ``text[start:end] == text`` of the turn it came from; ``type`` is a key of PLACEHOLDERS."""

    type: str
    start: int
    end: int
    text: str


# --------------------------------------------------------------------------------------------------- validators

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


# ---------------------------------------------------------------------------------------------------- lexicons

_LEXICONS = Path(__file__).resolve().parent / "lexicons"


def _lines(name: str) -> list[str]:
    return [ln for ln in (_LEXICONS / name).read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]


def _load_surnames() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(compound, common, all single) surnames."""
    groups: dict[str, list[str]] = {}
    current = ""
    for ln in (_LEXICONS / "pii_surnames.txt").read_text(encoding="utf-8").splitlines():
        if ln.startswith("## "):
            current = ln[3:].strip()
        elif ln and not ln.startswith("#"):
            groups.setdefault(current, []).extend(ln.split())
    common = frozenset(groups.get("common", []))
    return frozenset(groups.get("compound", [])), common, common | frozenset(groups.get("other", []))


def _load_divisions() -> tuple[dict[str, str], dict[str, str]]:
    """full name -> level, short name -> level (levels: prov, city, county)."""
    full: dict[str, str] = {}
    short: dict[str, str] = {}
    for ln in _lines("pii_divisions.tsv"):
        level, name, abbr = (ln.split("\t") + ["", ""])[:3]
        full.setdefault(name, level)
        if abbr:
            short.setdefault(abbr, level)
    for name in full:  # a short form that is some other division's full name is not a short form
        short.pop(name, None)
    return full, short


COMPOUND_SURNAMES, COMMON_SURNAMES, SURNAMES = _load_surnames()
DIVISIONS, DIVISION_SHORT = _load_divisions()


def _trie_regex(words: Iterable[str]) -> str:
    """The shared trie builder, as one group (safe to concatenate or quantify)."""
    return "(?:" + trie_regex(words) + ")"


# -------------------------------------------------------------------------------------------- context words

_DEFAULT_CONTEXT: dict[str, tuple[str, ...]] = {
    "order_no": ("订单号码", "订单编号", "订单号", "订单", "单号", "order no", "order"),
    "tracking_no": ("快递单号", "物流单号", "运单号", "快递单", "运单", "快递号", "物流号", "包裹号", "tracking"),
    "bank_card": ("银行卡号", "银行卡", "卡号", "储蓄卡", "信用卡", "借记卡", "银行账号", "银行账户", "收款账号"),
    "mobile": ("手机号码", "手机号", "手机", "电话号码", "联系电话", "电话", "联系方式", "号码", "座机", "固话", "tel"),
    "id_card": ("身份证号码", "身份证号", "身份证", "证件号码", "证件号"),
    "qq": ("QQ号", "QQ", "qq号", "qq", "扣扣"),
    "wechat": ("微信号", "微信", "vx", "VX", "wx", "WX", "V信", "v信", "薇信"),
}
# Looked for up to this many characters before a bare digit run that no validator accepted.
_WINDOW_CONTEXT = {
    "order_no": ("订单", "单号", "这单", "这个单", "下单", "退货", "退款", "换货", "到哪"),
    "wechat": ("微信", "薇信", "vx", "VX", "wx", "WX"),
    "qq": ("QQ", "qq", "扣扣"),
    "tracking_no": ("快递", "物流", "运单", "包裹", "顺丰", "圆通", "中通", "申通", "韵达", "极兔", "邮政", "EMS",
                    "德邦", "京东物流"),
}
_WINDOW = 20
_CLAUSE_ENDS = "，。！？；,!?;\n"
# Between a context word and its value: another number or placeholder means the word was about that one.
_BLOCKS_CONTEXT = re.compile(r"\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d|\[[^\[\]]{1,12}\]")


def _in_spans(spans: list[PiiSpan], i: int) -> bool:
    return any(sp.start <= i < sp.end for sp in spans)


def _blocked(text: str, spans: list[PiiSpan], a: int, b: int) -> bool:
    """Does text[a:b] hold a number, a placeholder or a span (so a context word before it is about that)?"""
    return _BLOCKS_CONTEXT.search(text, a, b) is not None or any(a <= sp.start and sp.end <= b for sp in spans)

# Carrier-prefixed tracking numbers (SF1234567890123, JDVA..., JT..., YT...) and UPU S10 (EA123456785CN);
# the regex finds the shape, _valid_carrier_code checks the prefix.
_CARRIER_SHAPE = r"[A-Za-z](?<![A-Za-z\d][A-Za-z])[A-Za-z]{1,4}\d{9,18}(?:[A-Z]{2})?(?![A-Za-z\d])"
_CARRIER_PREFIXES = frozenset({"SF", "YT", "ZTO", "ZT", "STO", "JD", "JDVA", "JDVB", "JDVC", "JDVD", "JDVE", "JDVF",
                               "JDX", "JT", "YD", "YUNDA", "EMS", "DPK", "DBL", "LP", "KYE", "HTKY", "BEST", "UC", "TT"})
_SKU_RE = re.compile(r"[A-Za-z]{1,4}-\d{1,5}")
_WECHAT_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{5,19}")
_DIGIT_GROUP_RE = re.compile(r"\d+[Xx]?")
_DIGITS_DASHES = re.compile(r"\d+(?:-\d+)*")
_DIGITS_SPACES = re.compile(r"\d+(?:[ -]\d+)*")
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

# ------------------------------------------------------------------------------------------ address grammar

# Characters that never occur inside a place name in practice (particles, pronouns, verbs of sending ...).
_STOP_CHARS = "的了吗呢吧啊呀哦嘛么哪谁什怎为是在到寄送住我你您他她它们与或跟及从往给把被让请帮要想能已还也就才又再很更最不没别这那些个吃喝看说问"
_LEFT_STOP_WORDS = ("一下", "查查", "看看", "麻烦", "谢谢", "请问", "地址", "收货", "快递", "发货", "退货", "换货",
                    "老家", "目前", "现在", "已经", "应该", "大概", "就是", "告诉", "知道", "还是", "可以", "以后")
_STOP_WORDS = ("谢谢", "麻烦", "可以", "快递", "电话", "手机", "收件", "联系", "今天", "明天", "后天", "时候", "尽快",
               "一下", "多久", "几天", "签收", "发货", "退货", "换货", "地址", "姓名", "收货", "订单", "单号", "运单",
               "座机", "固话", "邮箱", "微信", "身份证", "银行", "卡号")


def _namech_class() -> str:
    stops = sorted({ord(c) for c in _STOP_CHARS})
    ranges, lo = [], 0x4E00
    for cp in stops:
        if cp > lo:
            ranges.append((lo, cp - 1))
        lo = cp + 1
    ranges.append((lo, 0x9FFF))
    return "[" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]"


_NAMECH = _namech_class()
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")

# Place-name suffixes by kind: "coarse" (province .. county: strong only when the name is in the lexicon),
# "fine" (town level and below, always strong), "poi" (named places: strong), "estate" (园/苑/城 ...: strong with
# a name of 2+ characters), "unit" (号/楼/室 ...: strong only after a numeral: 三单元, 八楼).
_SUFFIXES: dict[str, str] = {}
for _s in ("省", "自治区", "特别行政区", "自治州", "地区", "市", "区", "县", "旗", "盟", "新区", "城区"):
    _SUFFIXES[_s] = "coarse"
for _s in ("街道", "镇", "乡", "村", "社区", "居委会", "村委会", "大道", "大街", "路", "街", "巷", "弄", "胡同",
           "小区", "新村", "花园", "公寓", "大厦", "家园", "号楼", "号院", "开发区", "工业区", "工业园", "产业园",
           "科技园", "商贸城", "农场", "园区", "广场", "嘉园", "雅苑", "名苑", "山庄", "别墅", "宿舍", "校区"):
    _SUFFIXES[_s] = "fine"
for _s in ("中心", "市场", "商场", "公司", "工厂", "学校", "小学", "中学", "大学", "学院", "医院", "酒店", "宾馆",
           "饭店", "银行", "驿站", "超市", "基地", "大楼", "写字楼", "物流园", "商城", "邮局", "营业厅", "门市"):
    _SUFFIXES[_s] = "poi"
for _s in ("园", "苑", "城", "府", "湾", "庭", "里", "院", "墅", "桥", "寓", "厂", "港", "湖", "岛"):
    _SUFFIXES[_s] = "estate"
for _s in ("号", "栋", "幢", "座", "楼", "层", "室", "期", "组", "门", "排", "单元", "户"):
    _SUFFIXES[_s] = "unit"
_NUMERALS = frozenset("一二三四五六七八九十百零〇两壹贰叁肆伍陆柒捌玖拾")

_NUM_UNITS = ("号楼", "号院", "号门", "号铺", "号", "弄", "支弄", "栋", "幢", "座", "单元", "室", "楼", "层", "户", "组",
              "排", "期", "区", "街", "巷", "F", "f", "铺", "栋楼")

_TRIGGER_GAP_RE = re.compile(r"[^\d\[\]，。！？；,!?;\n]{0,6}")
_ADDR_TRIGGERS = ("地址", "寄到", "送到", "发到", "寄往", "送往", "发往", "寄至", "送至", "收货地", "住在", "住址",
                  "家在", "改到", "改成", "改为", "配送到", "派送到", "位于", "地点", "邮寄到", "搬到")


_UNITS_RE = _trie_regex(_NUM_UNITS)
# The leading lookahead lets the regex engine skip positions that cannot start a component (~4x faster).
_SUFFIX_HIT_RE = re.compile(
    "(?=[0-9A-Za-z" + "".join(sorted({w[0] for w in _SUFFIXES})) + "])(?:"
    rf"(?P<num>\d{{1,6}}(?:(?:[-－—~～_]\d{{1,6}}){{1,3}}(?:[A-Za-z]?{_UNITS_RE}|(?![0-9]))|[A-Za-z]?{_UNITS_RE}))"
    r"|(?P<let>[A-Za-z]{1,2}\d{0,4}(?:号楼|单元|座|栋|幢|区|楼|号|室))"
    rf"|(?P<suf>{_trie_regex(_SUFFIXES)}))"
)
_GAP_RE = re.compile(rf"(?:[\s\-_－—#/、]|{_NAMECH}|[A-Za-z0-9]){{0,12}}")
_TAIL_RE = re.compile(rf"(?:{_NAMECH}|[A-Za-z0-9\-_#]){{1,14}}")
_STOP_SET = frozenset(_STOP_CHARS)
_LEX_ALL = frozenset(DIVISIONS) | frozenset(DIVISION_SHORT)
_LEX_STRONG = frozenset(DIVISIONS) | frozenset(k for k, v in DIVISION_SHORT.items() if v in ("prov", "city"))
_LEFT_STOP_RE = re.compile(_trie_regex(_LEFT_STOP_WORDS))
_STOP_WORDS_RE = re.compile(_trie_regex(_STOP_WORDS))
_LEX_PREFIX2 = frozenset(name[:2] for name in _LEX_ALL)
_MAX_NAME = 10  # characters of a place name before its suffix


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _is_namech(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" and ch not in _STOP_SET


# Words built like place names that name no place.
_GENERIC_PLACES = frozenset({"乡镇", "城镇", "村镇", "城市", "市区", "郊区", "地区", "城区", "县城", "小区", "社区", "街道",
                             "马路", "公路", "道路", "网路", "线路", "电路", "思路", "一路", "半路", "原路", "出路",
                             "走路", "上路", "路路", "大街", "逛街", "上街", "本市", "本地区", "外地区", "全市", "全区",
                             "全国", "全省", "外省", "本省", "该市", "我市", "商城", "公司", "我司", "贵司", "分公司",
                             "总公司", "银行", "医院", "学校", "大学", "超市", "市场", "中心", "门口", "楼下", "楼上",
                             "几号", "几楼", "几层", "型号", "账号", "单号", "号号", "信号", "暗号", "编号", "序号"})


def _suffix_strength(name: str, suffix: str) -> tuple[int, bool]:
    """(strong, fine) of a component ``name + suffix``."""
    kind = _SUFFIXES[suffix]
    if not name or name + suffix in _GENERIC_PLACES or name[-1] + suffix in _GENERIC_PLACES and len(name) <= 2:
        return 0, False
    if kind == "coarse":
        return int(name + suffix in DIVISIONS), False
    if kind in ("fine", "poi"):
        return 1, True
    if kind == "estate":
        return int(len(name) >= 2), False
    numeric = _NUMERALS.issuperset(name) or (len(name) <= 2 and name.isascii() and name.isalnum())
    return (1, True) if numeric else (0, False)


def _lex_start(text: str, j: int, hs: int) -> tuple[int, int, int]:
    """Leftmost division name in text[j:hs]: (its start or j, strong names found, names found)."""
    k = j
    while k < hs - 1:
        if text[k:k + 2] not in _LEX_PREFIX2:
            k += 1
            continue
        for length in (5, 4, 3, 2):
            if k + length <= hs and text[k:k + length] in _LEX_ALL:
                # count the names chained from here ("浙江杭州西湖区")
                strong = names = 0
                p = k
                while p < hs:
                    for ln in (5, 4, 3, 2):
                        if p + ln <= hs and text[p:p + ln] in _LEX_ALL:
                            strong += text[p:p + ln] in _LEX_STRONG
                            names += 1
                            p += ln
                            break
                    else:
                        break
                return k, strong, names
        k += 1
    return j, 0, 0


def _make_comp(text: str, j: int, hs: int, he: int, suffix: str) -> list:
    """[start, end, strong, fine, parts, j]: one place component whose name may start at j and whose suffix
    is text[hs:he]; a division name inside the run fixes where it really starts ("发货地杭州市" -> "杭州市")."""
    start = j
    for k in range(j, hs):
        if text[k:he] in DIVISIONS:
            start = k
            break
    strong, fine = _suffix_strength(text[start:hs], suffix)
    parts = 1
    lex, lex_strong, names = _lex_start(text, j, start)
    if names:
        start = lex
        strong += lex_strong
        parts += names
    return [start, he, strong, fine, parts, j, _SUFFIXES[suffix]]


_NUM_SEP_RE = re.compile(r"[-－—~～_]")


def _hyphen_number_strength(num: str) -> tuple[int, bool]:
    """148-6-631 or 3_6_2101 (building-unit-room) is an address number; 2026-11-11 is a date."""
    groups = _NUM_SEP_RE.split(num)
    if len(groups) < 2 or any(not g.isdigit() for g in groups):
        return 0, False
    if len(groups[0]) == 4 and groups[0][:2] in ("19", "20") and len(groups) == 3:
        return 0, False
    if len(groups) == 2 and max(len(g) for g in groups) < 3:
        return 0, False  # 1-3 (个工作日), 10-15 (天): ranges
    return 1, True


def _address_components(text: str, a: int, b: int) -> list[list]:
    """Place components in text[a:b], left to right (see _make_comp)."""
    comps: list[list] = []
    for m in _SUFFIX_HIT_RE.finditer(text, a, b):
        hs, he = m.span()
        kind = m.lastgroup
        lo = comps[-1][1] if comps else a
        if hs < lo:
            continue
        if kind == "num":
            if hs > a and (text[hs - 1].isdigit() or text[hs - 1] in ".-/"):
                continue
            num = m.group()
            if num[-1].isdigit():
                strong, fine = _hyphen_number_strength(num)
            else:
                strong, fine = 1, True
            comps.append([hs, he, strong, fine, 1, hs, "num"])
            continue
        if kind == "let":
            if hs > a and text[hs - 1].isascii() and text[hs - 1].isalnum():
                continue
            let = m.group()
            strong = any(ch.isdigit() for ch in let) or (len(let) == 2 and let[1] in "座栋幢区楼")
            comps.append([hs, he, int(strong), strong, 1, hs, "num"])
            continue
        j = hs
        stop = max(lo, hs - _MAX_NAME)
        while j > stop and "\u4e00" <= text[j - 1] <= "\u9fff" and text[j - 1] not in _STOP_SET:  # _is_namech
            j -= 1
        if j < hs - 1:  # never start inside a phrase such as 查一下/麻烦/谢谢
            for stop in _LEFT_STOP_RE.finditer(text, j, hs):
                j = max(j, stop.end())
        if j == hs:  # a bare suffix continues the previous component: 柳市 + 镇, 下城 + 区
            if comps and comps[-1][1] == hs and comps[-1][5] < comps[-1][0] + 1 + _MAX_NAME:
                prev = comps[-1]
                if text[prev[5]:hs] and _is_namech(text[hs - 1]):
                    comps[-1] = _make_comp(text, prev[5], hs, he, text[prev[0]:he][-(he - hs):] if False else m.group())
                    comps[-1][2] = max(comps[-1][2], prev[2])
                    comps[-1][3] = comps[-1][3] or prev[3]
            continue
        comps.append(_make_comp(text, j, hs, he, m.group()))
    return comps


# ------------------------------------------------------------------------------------------------ name grammar

_NAME_LABELS = ("我叫", "我的名字是", "我的名字叫", "名字是", "名字叫", "本人姓名", "真实姓名", "姓名", "收件人", "收货人",
                "联系人", "寄件人", "签收人", "取件人", "持卡人", "开户名", "户名", "开户人", "买家姓名", "称呼")
_HONORIFICS = ("先生", "女士", "小姐")
_NAME_FOLLOW = ("电话", "手机", "号码", "地址", "先生", "女士", "小姐", "身份", "联系", "收货", "电联", "姓名", "您好",
                "你好", "谢谢", "已经", "的", "在", "是", "和", "吗", "呢", "吧", "了", "啊", "收", "说", "要", "想", "也",
                "这", "那", "不", "没", "就", "还", "都", "很", "给", "让", "把", "被", "从", "到", "我",
                "你", "他", "她", "今天", "明天")
_NOT_NAME_BEFORE_HONORIFIC = ("谢谢", "您好", "你好", "这位", "那位", "各位", "尊敬", "亲爱", "感谢", "好的", "再见")
_NAME_RE = re.compile("(?=[" + "".join(sorted({w[0] for w in _NAME_LABELS} | {"先", "女", "小", "我"})) + "])"
                      "(?P<label>" + _trie_regex(_NAME_LABELS) + r")(?:是|为|叫)?[\s:：]{0,2}"
                      r"|(?P<hon>先生|女士|小姐)|(?P<iam>我是)")


# ------------------------------------------------------------------------------------------------------ Masker

_PLACEHOLDER_RE_SRC = (r"\[(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS.values()) +
                       r")\]|\[[\u4e00-\u9fffA-Za-z_]{1,8}x\]")


# Known top-level domains: an e-mail must end in one, so "a@qq.comQQ123" ends at ".com" whatever follows it.
_TLDS = ("com|net|org|edu|gov|cn|hk|tw|mo|io|co|me|info|top|xyz|cc|tv|biz|mobi|name|asia|vip|club|site|online|"
         "tech|shop|store|email|jp|kr|sg|uk|us|de|fr|ru|au|ca|in|it|es|nl|ch|se")

# Cheap test for "could hold a numeric/e-mail/code PII or a placeholder": most turns have no 5-digit run.
# (Placeholders are looked for separately: JDDC text is full of [数字x].) As pieces of a regex: its first
# characters, what may follow a first digit, and the alternatives that do not start with a digit. A run of five
# digits that starts after a digit has one that starts a character earlier, so only the first digit of a run is
# tried (what makes the search quick on prices and sizes).
_P1_FIRST = r"\d@微薇vVwW"
_P1_DIGIT = r"(?<!\d\d)[ -]?\d[ -]?\d[ -]?\d[ -]?\d|\.\d{1,3}\.\d|[*＊]{3}"
_P1_OTHER = ("@", "[微薇]信", "[vVwW][xX信]")
_FIVE_DIGITS = re.compile(r"\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d")
_PLACEHOLDER_RE = re.compile(_PLACEHOLDER_RE_SRC)


def _hint_regex(first: str, body: str) -> re.Pattern[str]:
    """A regex that matches where ``body`` matches, for yes/no searches only (the match itself is one character).

    ``first`` (a character-class body) must hold every character a match of ``body`` can start with. The pattern
    starts by consuming one of them, so the regex engine scans the text in a tight loop over that class and only
    tries ``body`` (looking ahead from the character just consumed) where one occurs; a leading ``(?=[first])``
    enters the matcher at every position (measured 1.1-1.5x slower on chat turns).
    """
    return re.compile(f"[{first}](?<=(?=(?:{body}))(?s:.))")


_P1_FILTER = _hint_regex(_P1_FIRST, "|".join([rf"\d(?:{_P1_DIGIT})", *_P1_OTHER]))


def _p2_hint_parts(address: bool, name: bool) -> tuple[str, str | None, list[str]] | None:
    """(first characters but digits, what may follow a first digit, the other alternatives) of a regex that finds
    something in every text where the name/address pass can find a span, and in few others.

    An address chain is only accepted with a fine-grained component (a 镇/路/小区... name, a numbered unit such as
    3单元/12号, a 12-3-401 number, a point of interest such as 市场/大厦) or after an address word (寄到/地址), and a
    name only after a label (我叫/收件人), before an honorific (先生/女士) or after 我是; those are what it looks for.
    """
    if not (address or name):
        return None
    words: list[str] = []
    alts: list[str] = []
    first = set()
    digit = None
    if address:
        words += [w for w, kind in _SUFFIXES.items() if kind in ("fine", "poi") and len(w) > 1] + list(_ADDR_TRIGGERS)
        single_fine = "".join(w for w, kind in _SUFFIXES.items() if kind == "fine" and len(w) == 1)
        units = "".join(sorted({u[0] for u in _NUM_UNITS if not u.isascii()} | {"单"}))
        numerals = "".join(sorted(_NUMERALS))
        sep = "[-－—~～_]"
        # A digit followed by a separator or an F (1-2-3, 123-4, 1-234, 3F, 3aF), a single fine suffix after a CJK
        # character (文三路), a unit after a digit, letter or numeral (3单元, 八楼). One branch per first character:
        # the regex engine tries alternatives one after another.
        digit = rf"{sep}(?:\d+{sep}\d|\d{{3}}|(?<=\d{{3}}{sep})\d)|[A-Za-z]?[Ff]"
        alts += [f"[{single_fine}](?<=[\u4e00-\u9fff][{single_fine}])",
                 f"[{units}](?<=[\dA-Za-z{numerals}][{units}])"]
        first |= set(single_fine) | set(units)
    if name:
        words += list(_NAME_LABELS) + list(_HONORIFICS) + ["我是"]
    word_first = {w[0] for w in words}
    first |= word_first
    # the word trie (~60 branches) only where a word can start
    alts.append("(?=[" + re.escape("".join(sorted(word_first))) + "])" + _trie_regex(words))
    return re.escape("".join(sorted(first))), digit, alts


def _p2_hint_regex(address: bool, name: bool) -> re.Pattern[str] | None:
    parts = _p2_hint_parts(address, name)
    if parts is None:
        return None
    first, digit, alts = parts
    return _hint_regex(first + (r"\d" if digit else ""), "|".join(([rf"\d(?:{digit})"] if digit else []) + alts))


# Placeholders that masking can change or look around: JDDC's PII placeholders (mapped onto ours) and ours (a
# listed name next to one is masked). Others ([数字x], [金额x] ...) only ever become "_keep" spans, which change
# nothing unless the first or second pass runs, and those have hints of their own.
_LIVE_PLACEHOLDERS = r"\[" + _trie_regex([p[1:-1] for p in (*PLACEHOLDERS.values(), *JDDC_PLACEHOLDERS)]) + r"\]"


def _any_hint_regex(address: bool, name: bool) -> re.Pattern[str]:
    """One search that fails on a text with nothing for either pass (most turns): the first-pass filter, a
    placeholder that masking can change or look around, and the second-pass hint, under one leading character
    class, with the alternatives that start with a digit in one branch."""
    p2_first, p2_digit, p2_alts = _p2_hint_parts(address, name) or ("", None, [])
    digit = _P1_DIGIT + (f"|{p2_digit}" if p2_digit else "")
    return _hint_regex(_P1_FIRST + p2_first + r"\[", "|".join([rf"\d(?:{digit})", *_P1_OTHER, _LIVE_PLACEHOLDERS,
                                                                 *p2_alts]))


class Masker:
    """Finds and masks PII; ``types`` limits which PII types are detected (default all of PLACEHOLDERS),
    ``context_words`` adds words (per type) that announce an order/tracking/card/phone/ID/QQ/WeChat value, and
    ``keep`` lists strings that are never masked where they occur (the shop's own return address or hotline,
    which the model should learn)."""

    def __init__(self, types: Iterable[str] | None = None,
                 context_words: Mapping[str, Iterable[str]] | None = None,
                 keep: Iterable[str] = ()) -> None:
        self.keep = tuple(sorted({k for k in keep if k}, key=len, reverse=True))
        self.types = frozenset(PLACEHOLDERS if types is None else types)
        unknown = self.types - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {sorted(PLACEHOLDERS)}")
        ctx: dict[str, list[str]] = {k: list(v) for k, v in _DEFAULT_CONTEXT.items()}
        for typ, words in (context_words or {}).items():
            if typ not in _DEFAULT_CONTEXT:
                raise ValueError(f"context words for {typ!r}: only {sorted(_DEFAULT_CONTEXT)} take context words")
            ctx[typ].extend(w for w in words if w)
        self._ctx_type: dict[str, str] = {}
        for typ, words in ctx.items():
            for w in words:
                self._ctx_type.setdefault(w, typ)
        ctx_alt = _trie_regex(self._ctx_type)
        first = re.escape("".join(sorted({w[0] for w in self._ctx_type})))
        # Every alternative starts by consuming a character from a small class and checks what precedes it with a
        # lookbehind *after* that, so the regex engine can skip most positions fast (3-5x quicker than leading
        # lookbehinds).
        self._scan = re.compile(
            rf"(?=[\d\[A-Za-z+＋(（{first}])(?:"
            rf"(?P<ph>{_PLACEHOLDER_RE_SRC})"
            r"|(?P<email>[A-Za-z0-9](?<![A-Za-z\d._%+\-][A-Za-z0-9])[A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9\-]+"
            rf"(?:\.[A-Za-z0-9\-]+)*\.(?i:{_TLDS})(?![A-Za-z\d]))"
            rf"|(?P<ctx>{ctx_alt})(?:号码|号)?[\s:：是为]{{0,3}}(?P<code>[A-Za-z0-9][A-Za-z0-9_\-]{{4,39}}(?: \d{{4,8}}(?![\dA-Za-z]))*)"
            r"(?![A-Za-z\d_\-@])"
            rf"|(?P<carrier>{_CARRIER_SHAPE})"
            r"|(?P<ip>\d(?<![\dA-Za-z.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.]))"
            r"|(?P<mmob>1(?<![\dA-Za-z]1)[3-9]\d[*＊]{4}\d{4}(?!\d))"
            r"|(?P<run>[\d+＋(（](?<![\dA-Za-z_.\-/][\d+＋(（])"
            r"(?:(?<=[+＋])|(?<=[(（])[+＋]?\d{2,4}[)）][ -]?\d|(?<=\d))(?:[ -]?\d){4,22}[Xx]?)"
            r"(?![\dA-Za-z_/%]|\.\d))"
        )
        window = {w: t for t, ws in _WINDOW_CONTEXT.items() for w in ws}
        self._window_re = re.compile(_trie_regex(window))
        self._window_type = window
        self._addr_trigger_re = re.compile(_trie_regex(_ADDR_TRIGGERS))
        # JDDC PII placeholder -> our type (any other placeholder is "_keep": left as it is)
        self._ph_type = {ph: _TYPE_OF_PLACEHOLDER[ours] for ph, ours in JDDC_PLACEHOLDERS.items()
                         if _TYPE_OF_PLACEHOLDER[ours] in self.types}
        self._p2_filter = _p2_hint_regex("address" in self.types, "name" in self.types)
        self._any = _any_hint_regex("address" in self.types, "name" in self.types)

    # ---------------------------------------------------------------------------------------------- public

    def find(self, text: str) -> list[_Span]:
        """Non-overlapping PII spans sorted by start (JDDC PII placeholders are reported with their mapped type)."""
        return [PiiSpan(*s) for s in self._spans(text) if s.type != "_keep"]

    def mask(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with every span replaced by its placeholder, and counts by placeholder string."""
        if self._any.search(text) is None:
            return text, {}
        return self._mask_hinted(text)

    def mask_many(self, texts: Sequence[str]) -> list[tuple[str, dict[str, int]]]:
        """``[self.mask(t) for t in texts]``, where a text repeated within the batch (a templated reply) is masked
        once; each result gets its own counts dict.

        (Joining the batch to run the hint search once over it was measured too: no quicker, because the search
        costs what scanning the characters costs, not the call.)"""
        search = self._any.search
        out: list[tuple[str, dict[str, int]]] = []
        memo: dict[str, tuple[str, dict[str, int]]] = {}
        for t in texts:
            if search(t) is None:
                out.append((t, {}))
                continue
            hit = memo.get(t)
            if hit is None:
                hit = memo[t] = self._mask_hinted(t)
                out.append(hit)
            else:
                out.append((hit[0], dict(hit[1])))
        return out

    def _mask_hinted(self, text: str) -> tuple[str, dict[str, int]]:
        spans = self._spans_hinted(text)
        if not spans:
            return text, {}
        out: list[str] = []
        counts: dict[str, int] = {}
        pos = 0
        for sp in spans:
            if sp.type == "_keep":
                continue
            ph = PLACEHOLDERS[sp.type]
            out.append(text[pos:sp.start])
            out.append(ph)
            counts[ph] = counts.get(ph, 0) + 1
            pos = sp.end
        if not counts:
            return text, {}
        out.append(text[pos:])
        return "".join(out), counts

    # ---------------------------------------------------------------------------------------------- passes

    def _spans(self, text: str) -> list[_Span]:
        if self._any.search(text) is None:
            return []
        return self._spans_hinted(text)

    def _spans_hinted(self, text: str) -> list[_Span]:
        """The spans of a text where ``_any`` matches."""
        spans: list[_Span] = []
        pending: list[tuple[int, int, str]] = []  # digit runs that only a context word could make PII
        types = self.types
        ph_type = self._ph_type
        if _P1_FILTER.search(text):
            matches = self._scan.finditer(text)
        elif "[" in text:  # nothing else the scan looks for is there
            for m in _PLACEHOLDER_RE.finditer(text):
                ph = m.group()
                spans.append(_Span(ph_type.get(ph, "_keep"), m.start(), m.end(), ph))
            matches = ()
        else:
            matches = ()
        for m in matches:
            group = m.lastgroup
            if group == "ph":
                ph = m.group()
                spans.append(_Span(ph_type.get(ph, "_keep"), m.start(), m.end(), ph))
            elif group == "email":
                if "email" in types:
                    spans.append(_Span("email", m.start(), m.end(), m.group()))
            elif group == "code":
                self._context_code(text, m, spans, pending)
            elif group == "carrier":
                if "tracking_no" in types and _valid_carrier_code(m.group()):
                    spans.append(_Span("tracking_no", m.start(), m.end(), m.group()))
            elif group == "ip":
                if "ip" in types and _valid_ip(m.group()):
                    spans.append(_Span("ip", m.start(), m.end(), m.group()))
            elif group == "mmob":
                if "mobile" in types:
                    spans.append(_Span("mobile", m.start(), m.end(), m.group()))
            else:
                self._digit_run(text, m.start(), m.group(), spans, pending)
        if self._p2_filter is not None and self._p2_filter.search(text):
            spans = self._names_and_addresses(text, spans)
        if pending:
            # decided after names/addresses: a context word inside an address, or an address between the word and
            # the number, must count the same way when the text is masked again
            added = False
            for start, end, digits in pending:
                if all(end <= sp.start or start >= sp.end for sp in spans):
                    typ = self._typed(self._window_context(text, start, end, digits, spans))
                    if typ:
                        spans.append(_Span(typ, start, end, text[start:end]))
                        added = True
            if added:
                spans.sort(key=lambda x: x.start)
        if spans and "name" in types:
            spans = self._listed_names(text, spans)
        if self.keep and spans:
            spans = self._drop_kept(text, spans)
        return spans

    def _drop_kept(self, text: str, spans: list[_Span]) -> list[_Span]:
        """Spans overlapping an occurrence of a ``keep`` string are not PII of the customer's."""
        kept: list[tuple[int, int]] = []
        for k in self.keep:
            i = text.find(k)
            while i >= 0:
                kept.append((i, i + len(k)))
                i = text.find(k, i + 1)
        if not kept:
            return spans
        return [sp for sp in spans if sp.type == "_keep" or all(sp.end <= a or sp.start >= b for a, b in kept)]

    def _listed_names(self, text: str, spans: list[_Span]) -> list[_Span]:
        """A bare name listed next to other personal data: "{address}，王伟，{phone}" (收件信息 as people type it)."""
        found: list[_Span] = []
        starts: set[int] | None = None
        ends: set[int] = set()
        n = len(text)
        for sp in spans:
            typ = sp.type
            if typ == "name" or (typ == "_keep" and _TYPE_OF_PLACEHOLDER.get(sp.text, "name") == "name"):
                continue
            # a clause boundary is a separator, a placeholder bracket or the edge of another span
            e, s = sp.end, sp.start
            after = e < n - 1 and text[e] in _LIST_SEPS
            before = s > 1 and text[s - 1] in _LIST_SEPS
            if not (after or before):
                continue
            if starts is None:
                starts = {x.start for x in spans}
                ends = {x.end for x in spans}
            if after:  # the clause after it
                end = e + 1
                while end < n and end - e <= 5 and text[end] not in _LIST_SEPS and text[end] != "[" \
                        and end not in starts:
                    end += 1
                if end == n or text[end] in _LIST_SEPS or text[end] == "[" or end in starts:
                    if _listed_name_ok(text[e + 1:end]):
                        found.append(_Span("name", e + 1, end, text[e + 1:end]))
            if before:  # the clause before it
                start = s - 1
                while start > 0 and s - start <= 5 and text[start - 1] not in _LIST_SEPS \
                        and text[start - 1] != "]" and start not in ends:
                    start -= 1
                if start == 0 or text[start - 1] in _LIST_SEPS or text[start - 1] == "]" or start in ends:
                    if _listed_name_ok(text[start:s - 1]):
                        found.append(_Span("name", start, s - 1, text[start:s - 1]))
        if not found:
            return spans
        taken = sorted(spans, key=lambda x: x.start)
        for nm in sorted(set(found), key=lambda x: x.start):
            if all(nm.end <= o.start or nm.start >= o.end for o in taken):
                taken.append(nm)
                taken.sort(key=lambda x: x.start)
        return taken

    def _typed(self, typ: str | None) -> str | None:
        return typ if typ in self.types else None

    def _context_code(self, text: str, m: re.Match[str], spans: list[_Span],
                      pending: list[tuple[int, int, str]]) -> None:
        """A value right after a context word (订单号：..., 卡号 ..., QQ ...)."""
        code = m.group("code")
        word = m.group("ctx")
        ctx = self._ctx_type[word]
        if ctx != "wechat" and not _FIVE_DIGITS.search(code):
            return  # every value but a WeChat ID holds a run of 5+ digits (the first-pass filter relies on it)
        if " " in code and ctx not in ("order_no", "tracking_no"):  # "手机13812345678 2222": groups of their own
            self._digit_run(text, m.start("code"), code, spans, pending) if _DIGITS_SPACES.fullmatch(code) else None
            return
        if word.isascii() and m.start() > 0 and (text[m.start() - 1].isdecimal()
                                                 or text[m.start() - 1].isascii() and text[m.start() - 1].isalpha()):
            if m.end("ctx") < m.start("code") \
                    and _DIGITS_DASHES.fullmatch(code):  # "border 12345678": the word is part of another word
                self._digit_run(text, m.start("code"), code, spans, pending)
            return
        if word.isascii() and m.end("ctx") == m.start("code") and not code.isdigit():
            if word.lower() == "wx" and code.startswith("id_") and "wechat" in self.types:  # wxid_xxxxxx
                spans.append(_Span("wechat", m.start("ctx"), m.end("code"), word + code))
            return  # otherwise "vxabc" is one token, not a context word and a value
        d = _ascii_digits(code)
        typ: str | None = None
        if ctx in ("order_no", "tracking_no"):
            if _valid_carrier_code(code):
                typ = "tracking_no"
            elif sum(map(str.isdigit, d)) >= 6 and not (d.isdigit() and len(d) == 8 and _date_like(d)) \
                    and not _SKU_RE.fullmatch(d):
                near = None
                if ctx == "order_no":  # the nearest window word before the value decides
                    for near in self._window_re.finditer(text, max(0, m.start() - _WINDOW), m.start("code")):
                        pass
                if near is not None:
                    typ = "tracking_no" if self._window_type[near.group()] == "tracking_no" else ctx
                else:
                    typ = ctx
        elif ctx == "bank_card" and d.isdigit():
            typ = "bank_card" if valid_bank_card(d, context=True) else _classify_digits(d)
        elif ctx == "mobile" and d.isdigit():
            typ = _classify_digits(d) or ("landline" if 7 <= len(d) <= 8 and d[0] in "23456789" else None)
        elif ctx == "id_card":
            if not valid_id_card(d):
                return  # after 身份证 a number failing the ID checks is a typo, not some other PII
            typ = "id_card"
        elif ctx == "qq" and d.isdigit():
            typ = _classify_digits(d) or ("qq" if 5 <= len(d) <= 11 and d[0] != "0" else None)
        elif ctx == "wechat":
            if d.isdigit():
                typ = _classify_digits(d) or ("qq" if 5 <= len(d) <= 11 and d[0] != "0" else None)
            elif _WECHAT_ID_RE.fullmatch(code):
                typ = "wechat"
        if typ is None and _DIGITS_DASHES.fullmatch(d):
            self._digit_run(text, m.start("code"), code, spans, pending)
            return
        typ = self._typed(typ)
        if typ:
            spans.append(_Span(typ, m.start("code"), m.end("code"), code))

    def _window_context(self, text: str, start: int, end: int, digits: str, spans: list[_Span]) -> str | None:
        """Type announced by an order/logistics/WeChat word elsewhere in the same clause ("订单好像有问题
        5566778899001", "2611131387837576这个订单"), provided nothing number-like stands between. Lengths play no
        part, so masking something else cannot change the answer."""
        lo = max(text.rfind(c, 0, start) for c in _CLAUSE_ENDS) + 1
        hi = min((i for i in (text.find(c, end) for c in _CLAUSE_ENDS) if i >= 0), default=len(text))
        if not text[lo:start].strip() and not text[end:hi].strip():  # alone in its clause: look at the neighbours
            lo = max(text.rfind(c, 0, max(lo - 1, 0)) for c in _CLAUSE_ENDS) + 1 if lo else lo
            hi = min((i for i in (text.find(c, hi + 1) for c in _CLAUSE_ENDS) if i >= 0), default=len(text)) \
                if hi < len(text) else hi
        candidates = []
        near = None
        for w in self._window_re.finditer(text, lo, start):
            if not _inside_brackets(text, w.start()) and not _in_spans(spans, w.start()):
                near = w  # ("[物流单号]" holds 单号 but is no context word)
        if near is not None and not _blocked(text, spans, near.end(), start):
            candidates.append(self._window_type[near.group()])
        for w in self._window_re.finditer(text, end, hi):
            if not _inside_brackets(text, w.start()) and not _in_spans(spans, w.start()):
                if not _blocked(text, spans, end, w.start()):
                    candidates.append(self._window_type[w.group()])
                break
        for typ in candidates:
            if typ in ("wechat", "qq"):
                if 5 <= len(digits) <= 11 and digits[0] != "0":
                    return typ
            elif len(digits) >= 8 and not _date_like(digits):
                return typ
        return None

    def _digit_run(self, text: str, start: int, raw: str, spans: list[_Span],
                   pending: list[tuple[int, int, str]]) -> None:
        """Classify a run of digits (maybe with spaces/dashes/+86/(area) parts); split it when the whole fails."""
        if raw.isascii() and raw.isdigit():  # the common case: one group
            groups = [(0, len(raw))]
            digits = raw
        else:
            groups = [g.span() for g in _DIGIT_GROUP_RE.finditer(raw)]
            digits = _ascii_digits("".join(raw[a:b] for a, b in groups))
        typ = _classify_digits(digits)
        if typ is None and len(groups) == 1 and digits.isdigit() and len(digits) >= 5 and raw.isdecimal():
            pending.append((start, start + len(raw), digits))
            return
        if typ is not None:
            typ = self._typed(typ)
            if typ:
                s, e = start, start + len(raw)
                if raw[0] in "+＋(（" and typ not in ("mobile", "landline"):
                    s = start + groups[0][0]
                spans.append(_Span(typ, s, e, text[s:e]))
            return
        if len(groups) < 2:
            return
        # Whole run failed: try consecutive groups, longest first, left to right (e.g. "13812345678 2").
        i, n = 0, len(groups)
        while i < n:
            for j in range(n, i, -1):
                if j - i == n:
                    continue
                d = _ascii_digits("".join(raw[a:b] for a, b in groups[i:j]))
                typ = _classify_digits(d)
                if typ:
                    end = groups[j - 1][1]
                    if typ == "landline" and j < n and raw[end] == "-" and groups[j][1] - groups[j][0] <= 5:
                        end = groups[j][1]  # extension: 0571-88886666-801
                        j += 1
                    typ = self._typed(typ)
                    if typ:
                        spans.append(_Span(typ, start + groups[i][0], start + end,
                                             text[start + groups[i][0]:start + end]))
                    i = j
                    break
            else:
                i += 1

    def _names_and_addresses(self, text: str, spans: list[_Span]) -> list[_Span]:
        """Second pass over the text between first-pass spans: names first, then address chains."""
        segments = []
        pos = 0
        for sp in spans:
            if sp.start > pos:
                segments.append((pos, sp.start))
            pos = max(pos, sp.end)
        if pos < len(text):
            segments.append((pos, len(text)))
        extra: list[_Span] = []
        # a name-regex match inside a segment is one in the whole text too: one search rules out every segment
        find_names = "name" in self.types and _NAME_RE.search(text) is not None
        find_addresses = "address" in self.types
        for a, b in segments:
            names = self._names(text, a, b) if find_names else []
            extra.extend(names)
            if find_addresses:
                p = a
                for nm in names + [None]:
                    q = nm.start if nm else b
                    if q > p:
                        extra.extend(self._addresses(text, p, q))
                    if nm:
                        p = nm.end
        if not extra:
            return spans
        return sorted(spans + extra, key=lambda s: s.start)

    def _names(self, text: str, a: int, b: int) -> list[_Span]:
        out: list[_Span] = []
        pos = a
        while True:
            m = _NAME_RE.search(text, pos, b)
            if m is None:
                return out
            pos = m.end()
            if m.lastgroup == "label":
                span = _name_after(text, m.end(), b, strict=False)
            elif m.lastgroup == "iam":
                span = _name_after(text, m.end(), b, strict=True)
            else:
                span = _name_before(text, m.start(), a)
                if span and out and span[0] < out[-1].end:
                    span = None
            if span:
                out.append(_Span("name", span[0], span[1], text[span[0]:span[1]]))
                pos = max(pos, span[1])

    def _addresses(self, text: str, a: int, b: int) -> list[_Span]:
        comps = _address_components(text, a, b)
        if not comps:
            return []
        out: list[_Span] = []
        chain: list[list] = []
        for comp in comps + [None]:  # type: ignore[list-item]
            if comp is not None and chain:
                gap = text[chain[-1][1]:comp[0]]
                if not gap or (_GAP_RE.fullmatch(gap) and not _STOP_WORDS_RE.search(gap)):
                    chain.append(comp)
                    continue
            if chain:
                span = self._accept_chain(text, chain, b)
                if span:
                    if out and span[0] <= out[-1].end:  # a tail swallowed the start of this chain
                        prev = out.pop()
                        span = (prev.start, max(span[1], prev.end))
                    out.append(_Span("address", span[0], span[1], text[span[0]:span[1]]))
            chain = [comp] if comp is not None else []
        return out

    def _address_trigger(self, text: str, start: int) -> re.Match[str] | None:
        """An address word (寄到/地址 ...) shortly before ``start`` with no digit, placeholder or clause end between
        (so that masking something in between cannot change the decision)."""
        found = None
        for t in self._addr_trigger_re.finditer(text, max(0, start - 16), start):
            found = t
        if found is None or not _TRIGGER_GAP_RE.fullmatch(text, found.end(), start):
            return None
        return found

    def _accept_chain(self, text: str, chain: list[list], b: int) -> tuple[int, int] | None:
        """Is this run of components an address? Needs two strong components incl. a fine-grained one, or one
        strong component right after an address word (寄到/地址 ...)."""
        while len(chain) > 1 and chain[0][2] == 0 and chain[0][6] == "unit":  # 税号 顺德区... starts at 顺德区
            chain = chain[1:]
        strong = fine = parts = 0
        for c in chain:
            strong += c[2]
            fine += c[3]
            parts += c[4]
        start, end = chain[0][0], chain[-1][1]
        if strong == 0:
            return None
        if not (strong >= 2 and fine >= 1):
            trig = self._address_trigger(text, start)
            if trig is None or not (fine >= 1 or parts >= 2):
                return None
        if fine and chain[-1][6] in ("fine", "num", "unit"):  # a trailing place name: 寰宇天下, 手机店, 958
            t = _TAIL_RE.match(text, end, b)
            if t:
                tail = t.group()
                stop = _STOP_WORDS_RE.search(tail)
                if stop:
                    tail = tail[:stop.start()]
                if end + len(tail) < b and _is_ascii_alnum(text[end + len(tail)]):
                    tail = tail.rstrip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # no cut runs
                end += len(tail.rstrip("-_#"))
        # never end inside a run of letters/digits ("0栋0F|110101..."): the rest of the run would change meaning
        while end > start and end < len(text) and _is_ascii_alnum(text[end]) and _is_ascii_alnum(text[end - 1]):
            end -= 1
        if end - start < 2:
            return None
        return start, end


_LIST_SEPS = "，,、；;/| ：:（）()"
_NOT_NAMES = frozenset(w for ln in _lines("pii_not_names.txt") for w in ln.split())


def _listed_name_ok(cand: str) -> bool:
    """Is ``cand`` (a whole clause next to other PII) a person's name?"""
    if not 2 <= len(cand) <= 4 or (cand[0] not in COMMON_SURNAMES and cand[:2] not in COMPOUND_SURNAMES) \
            or cand in _NOT_NAMES or cand in _LEX_ALL:
        return False  # (a name starts with a common or a compound surname: the cheap test first)
    if not all("\u4e00" <= ch <= "\u9fff" and ch not in _STOP_SET for ch in cand):
        return False
    if cand[:2] in COMPOUND_SURNAMES:
        return len(cand) >= 3
    return cand[0] in COMMON_SURNAMES and len(cand) <= 3 and cand[-1:] not in _SUFFIXES and cand[-2:] not in _SUFFIXES


def _inside_brackets(text: str, i: int) -> bool:
    """Is position ``i`` inside a short ``[...]`` placeholder?"""
    left = text.rfind("[", max(0, i - 12), i + 1)
    if left < 0 or "]" in text[left:i]:
        return False
    right = text.find("]", i, i + 12)
    return right >= 0 and "[" not in text[i:right]


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


_LATIN_NAME_RE = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}(?![A-Za-z0-9])")


def _given_name_len(text: str, pos: int, b: int, max_len: int = 2) -> int:
    n = 0
    while n < max_len and pos + n < b:
        ch = text[pos + n]
        if not _CJK_RE.match(ch) or ch in _STOP_CHARS or text.startswith(_NAME_FOLLOW, pos + n):
            break
        n += 1
    return n


def _name_after(text: str, pos: int, b: int, strict: bool) -> tuple[int, int] | None:
    """A name starting at ``pos`` (after 我叫/收件人/我是 ...): known surname + 1-2 given-name characters,
    or (after a label) a Latin name."""
    if pos >= b:
        return None
    if not strict:
        m = _LATIN_NAME_RE.match(text, pos, b)
        if m:
            return m.start(), m.end()
    two = text[pos:pos + 2]
    if two in COMPOUND_SURNAMES:
        sur = 2
    elif text[pos] in (COMMON_SURNAMES if strict else SURNAMES):
        sur = 1
    else:
        return None
    given = _given_name_len(text, pos + sur, b)
    if given == 0 and (sur == 1 or strict):
        return None
    end = pos + sur + given
    if (strict or text[pos] not in COMMON_SURNAMES) and end < b and _CJK_RE.match(text[end]) and not text.startswith(_NAME_FOLLOW, end):
        return None  # "我是李宁的粉丝" is fine, "我是王者荣耀玩家" is not a name
    return pos, end


def _name_before(text: str, pos: int, a: int) -> tuple[int, int] | None:
    """A name ending right before an honorific at ``pos`` (王先生, 王小明女士)."""
    if pos <= a:
        return None
    for w in _NOT_NAME_BEFORE_HONORIFIC:
        if text.startswith(w, max(a, pos - len(w))) and pos - len(w) >= a:
            if text[pos - len(w):pos] == w:
                return None
    c1 = text[pos - 1]
    if c1 in COMMON_SURNAMES:
        if pos - 3 >= a and text[pos - 3:pos - 1] in COMPOUND_SURNAMES:
            return pos - 3, pos
        return pos - 1, pos
    if pos - 2 >= a and text[pos - 2:pos] in COMPOUND_SURNAMES:
        return pos - 2, pos
    if not _CJK_RE.match(c1) or c1 in _STOP_CHARS:
        return None
    for length in (2, 3):  # surname + 1 or 2 given-name characters
        s = pos - length
        if s < a:
            break
        cand = text[s:pos]
        if not all(_CJK_RE.match(ch) and ch not in _STOP_CHARS for ch in cand):
            break
        if cand[0] in COMMON_SURNAMES or (length == 3 and cand[0] in SURNAMES and cand[1] not in SURNAMES):
            return s, pos
    return None


# Characters without which no text is ever changed (besides any decimal digit and ASCII letters): the
# first-pass triggers and the characters the name/address pass needs.
TRIGGER_CHARS: frozenset[str] = frozenset(
    "@[微薇" + "".join({s[0] for s in _SUFFIXES} | {w[0] for w in _ADDR_TRIGGERS} | {u[0] for u in _NUM_UNITS}
                       | {w[0] for w in _NAME_LABELS} | {"先", "女", "小", "我"}))

_DEFAULT: Masker | None = None


def _default() -> Masker:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Masker()
    return _DEFAULT


def find_pii(text: str) -> list[_Span]:
    """PII spans of ``text`` with the default Masker: non-overlapping, sorted by start."""
    return _default().find(text)


def mask(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII with typed placeholders; return the masked text and counts by placeholder (``{"[手机号]": 1}``)."""
    masker = _DEFAULT or _default()
    if masker._any.search(text) is None:  # the common case, without two method calls
        return text, {}
    return masker._mask_hinted(text)


def mask_many(texts: Sequence[str]) -> list[tuple[str, dict[str, int]]]:
    """``[mask(t) for t in texts]`` with the default Masker, quicker on batches (see Masker.mask_many)."""
    return (_DEFAULT or _default()).mask_many(texts)
