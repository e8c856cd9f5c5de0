"""Word lists the name and address grammars rest on: surnames, administrative divisions and words that are not
names (files under ``wordlists/``), and the characters that never occur in a name or place name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from kefu.text import trie_regex

_LEXICONS = Path(__file__).resolve().parent / "wordlists"


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


_NOT_NAMES = frozenset(w for ln in _lines("pii_not_names.txt") for w in ln.split())

# Characters that never occur inside a place name in practice (particles, pronouns, verbs of sending ...).
_STOP_CHARS = "的了吗呢吧啊呀哦嘛么哪谁什怎为是在到寄送住我你您他她它们与或跟及从往给把被让请帮要想能已还也就才又再很更最不没别这那些个吃喝看说问"


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
_STOP_SET = frozenset(_STOP_CHARS)
