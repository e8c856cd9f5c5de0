"""Chinese shop text, shared by every stage: numbers and money, PII detection and masking, order statuses, normalisation helpers."""

from __future__ import annotations

import re
from typing import Iterable, Sequence


def trie_regex(words: Iterable[str]) -> str:
    """A regex (as a string) matching any of ``words``, shaped as a character trie: matching costs the text's length,
    not the number of words, and at a position the longest word wins. Empty words are ignored; no words gives ``""``.
    """
    trie: dict = {}
    for word in words:
        if not word:
            continue
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict) -> str:
        end = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        singles = [b for b in branches if len(b) == 1]
        multi = [b for b in branches if len(b) != 1]
        parts = multi + ([singles[0]] if len(singles) == 1 else ["[" + "".join(singles) + "]"] if singles else [])
        body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        if end:
            body = (body if len(parts) == 1 and len(body) == 1 else "(?:" + body + ")") + "?"
        return body

    return build(trie)


def iter_ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    """The n-grams of a token sequence (a string gives character n-grams), in order."""
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
