"""The Masker: one combined regex finds numeric/e-mail/code candidates, validators and context words type them,
the name/address grammars run on turns holding a trigger, and every span becomes its placeholder."""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from kefu.text.pii.address import _ADDR_TRIGGERS, _NUM_UNITS, _SUFFIXES, find_addresses
from kefu.text.pii.hints import (_P1_FILTER, _PLACEHOLDER_RE, _PLACEHOLDER_RE_SRC, _any_hint_regex, _p2_hint_regex)
from kefu.text.pii.lexicons import _trie_regex
from kefu.text.pii.names import _NAME_LABELS, _NAME_RE, find_names, listed_names
from kefu.text.pii.spans import _TYPE_OF_PLACEHOLDER, JDDC_PLACEHOLDERS, PLACEHOLDERS, PiiSpan, _Span
from kefu.text.pii.validators import (_CARRIER_SHAPE, _ascii_digits, _classify_digits, _date_like, _valid_carrier_code,
                                      _valid_ip, valid_bank_card, valid_id_card)

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


def _in_spans(spans: list[_Span], i: int) -> bool:
    return any(sp.start <= i < sp.end for sp in spans)


def _blocked(text: str, spans: list[_Span], a: int, b: int) -> bool:
    """Does text[a:b] hold a number, a placeholder or a span (so a context word before it is about that)?"""
    return _BLOCKS_CONTEXT.search(text, a, b) is not None or any(a <= sp.start and sp.end <= b for sp in spans)


_SKU_RE = re.compile(r"[A-Za-z]{1,4}-\d{1,5}")
_WECHAT_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{5,19}")
_DIGIT_GROUP_RE = re.compile(r"\d+[Xx]?")
_DIGITS_DASHES = re.compile(r"\d+(?:-\d+)*")
_DIGITS_SPACES = re.compile(r"\d+(?:[ -]\d+)*")


# Known top-level domains: an e-mail must end in one, so "a@qq.comQQ123" ends at ".com" whatever follows it.
_TLDS = ("com|net|org|edu|gov|cn|hk|tw|mo|io|co|me|info|top|xyz|cc|tv|biz|mobi|name|asia|vip|club|site|online|"
         "tech|shop|store|email|jp|kr|sg|uk|us|de|fr|ru|au|ca|in|it|es|nl|ch|se")

_FIVE_DIGITS = re.compile(r"\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d")


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
        """``text`` with every span replaced by its placeholder, and counts by placeholder string. JDDC's own
        placeholders (``[订单x]``, ``[电话x]`` ...) are already anonymous and stay as they are (they are slots)."""
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
            if sp.type == "_keep" or sp.text in JDDC_PLACEHOLDERS:  # already anonymised: JDDC's slots stay as-is
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
            spans = listed_names(text, spans)
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
        want_names = "name" in self.types and _NAME_RE.search(text) is not None
        want_addresses = "address" in self.types
        for a, b in segments:
            names = find_names(text, a, b) if want_names else []
            extra.extend(names)
            if want_addresses:
                p = a
                for nm in names + [None]:
                    q = nm.start if nm else b
                    if q > p:
                        extra.extend(find_addresses(text, p, q))
                    if nm:
                        p = nm.end
        if not extra:
            return spans
        return sorted(spans + extra, key=lambda s: s.start)


def _inside_brackets(text: str, i: int) -> bool:
    """Is position ``i`` inside a short ``[...]`` placeholder?"""
    left = text.rfind("[", max(0, i - 12), i + 1)
    if left < 0 or "]" in text[left:i]:
        return False
    right = text.find("]", i, i + 12)
    return right >= 0 and "[" not in text[i:right]



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
