"""Name grammar: a known surname plus 1-2 given-name characters after a label (我叫/收件人), before an honorific
(王先生) or after 我是; a bare name listed next to other PII ("{address}，王伟，{phone}")."""

from __future__ import annotations

import re

from kefu.text.pii.address import _LEX_ALL, _SUFFIXES
from kefu.text.pii.lexicons import (_CJK_RE, _NOT_NAMES, _STOP_CHARS, _STOP_SET, _trie_regex, COMMON_SURNAMES,
                                    COMPOUND_SURNAMES, SURNAMES)
from kefu.text.pii.spans import _TYPE_OF_PLACEHOLDER, _Span

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

_LIST_SEPS = "，,、；;/| ：:（）()"


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


def find_names(text: str, a: int, b: int) -> list[_Span]:
    """Name spans in text[a:b]: after a label (我叫/收件人) or 我是, before an honorific (先生/女士)."""
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


def listed_names(text: str, spans: list[_Span]) -> list[_Span]:
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
