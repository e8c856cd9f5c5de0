"""Cheap yes/no searches that let the masker skip most turns: one regex fails on a text with nothing for either
pass, so only turns holding a 5-digit run, '@', a placeholder or a name/address word are parsed."""

from __future__ import annotations

import re

from kefu.text.pii.address import _ADDR_TRIGGERS, _NUM_UNITS, _NUMERALS, _SUFFIXES
from kefu.text.pii.lexicons import _trie_regex
from kefu.text.pii.names import _HONORIFICS, _NAME_LABELS
from kefu.text.pii.spans import JDDC_PLACEHOLDERS, PLACEHOLDERS

_PLACEHOLDER_RE_SRC = (r"\[(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS.values()) +
                       r")\]|\[[\u4e00-\u9fffA-Za-z_]{1,8}x\]")

# Cheap test for "could hold a numeric/e-mail/code PII or a placeholder": most turns have no 5-digit run.
# (Placeholders are looked for separately: JDDC text is full of [数字x].) As pieces of a regex: its first
# characters, what may follow a first digit, and the alternatives that do not start with a digit. A run of five
# digits that starts after a digit has one that starts a character earlier, so only the first digit of a run is
# tried (what makes the search quick on prices and sizes).
_P1_FIRST = r"\d@微薇vVwW"
_P1_DIGIT = r"(?<!\d\d)[ -]?\d[ -]?\d[ -]?\d[ -]?\d|\.\d{1,3}\.\d|[*＊]{3}"
_P1_OTHER = ("@", "[微薇]信", "[vVwW][xX信]")
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
