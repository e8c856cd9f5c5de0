"""Address grammar: a chain of place components (lexicon divisions, 镇/路/小区 suffixes, 3单元/12-3-401 numbers)
is an address when it holds enough strong parts, or follows an address word (寄到/地址 ...)."""

from __future__ import annotations

import re

from kefu.text.pii.lexicons import _NAMECH, _STOP_SET, DIVISION_SHORT, DIVISIONS, _trie_regex
from kefu.text.pii.spans import _Span

_LEFT_STOP_WORDS = ("一下", "查查", "看看", "麻烦", "谢谢", "请问", "地址", "收货", "快递", "发货", "退货", "换货",
                    "老家", "目前", "现在", "已经", "应该", "大概", "就是", "告诉", "知道", "还是", "可以", "以后")
_STOP_WORDS = ("谢谢", "麻烦", "可以", "快递", "电话", "手机", "收件", "联系", "今天", "明天", "后天", "时候", "尽快",
               "一下", "多久", "几天", "签收", "发货", "退货", "换货", "地址", "姓名", "收货", "订单", "单号", "运单",
               "座机", "固话", "邮箱", "微信", "身份证", "银行", "卡号")

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
_ADDR_TRIGGER_RE = re.compile(_trie_regex(_ADDR_TRIGGERS))

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
                    comps[-1] = _make_comp(text, prev[5], hs, he, m.group())
                    comps[-1][2] = max(comps[-1][2], prev[2])
                    comps[-1][3] = comps[-1][3] or prev[3]
            continue
        comps.append(_make_comp(text, j, hs, he, m.group()))
    return comps


def find_addresses(text: str, a: int, b: int) -> list[_Span]:
    """Address spans in text[a:b]: runs of components that ``_accept_chain`` accepts."""
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
            span = _accept_chain(text, chain, b)
            if span:
                if out and span[0] <= out[-1].end:  # a tail swallowed the start of this chain
                    prev = out.pop()
                    span = (prev.start, max(span[1], prev.end))
                out.append(_Span("address", span[0], span[1], text[span[0]:span[1]]))
        chain = [comp] if comp is not None else []
    return out


def _address_trigger(text: str, start: int) -> re.Match[str] | None:
    """An address word (寄到/地址 ...) shortly before ``start`` with no digit, placeholder or clause end between
    (so that masking something in between cannot change the decision)."""
    found = None
    for t in _ADDR_TRIGGER_RE.finditer(text, max(0, start - 16), start):
        found = t
    if found is None or not _TRIGGER_GAP_RE.fullmatch(text, found.end(), start):
        return None
    return found


def _accept_chain(text: str, chain: list[list], b: int) -> tuple[int, int] | None:
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
        trig = _address_trigger(text, start)
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
