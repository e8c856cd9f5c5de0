"""Another customer's PII in a reply: whatever ``kefu.text.pii`` finds in the reply and not in this customer's own
texts (their turns, orders, tool results) is a leak; each hit's suggestion is the masker's placeholder."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from kefu.safety.compliance.violation import ART_PII, Violation, _protected
from kefu.text import pii

def _norm_pii(kind: str, value: str) -> str:
    """The value as compared with the customer's own: e-mails lower-cased, numbers without spaces, +, - (and +86)."""
    norm = value.lower() if kind == "email" else re.sub(r"[\s+-]", "", value).upper()
    if kind == "mobile" and norm.startswith("86") and len(norm) == 13:
        norm = norm[2:]
    return norm


def find_pii(text: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, normalised value) of each PII span ``kefu.text.pii.find_pii`` finds (validated numbers,
    names, addresses; JDDC PII placeholders count as their type)."""
    return [(span.type, span.start, span.end, _norm_pii(span.type, span.text)) for span in pii.find_pii(text)]


@lru_cache(maxsize=256)
def _own_pii(contexts: tuple[str, ...]) -> frozenset[str]:
    """Normalised PII values of a customer's context; cached because serve checks every sentence of a stream
    against the same context."""
    return frozenset(norm for context in contexts for _, _, _, norm in find_pii(context))


def _masked_match(norm: str, own: frozenset[str]) -> bool:
    """A partly masked value (182****9054) is the customer's own when it fits one of their full values."""
    if "*" not in norm:
        return False
    pattern = re.compile("".join(r"\w" if ch == "*" else re.escape(ch) for ch in norm))
    return any(pattern.fullmatch(value) for value in own)


def scan_output(reply: str, context_texts: list[str], *, allow: Iterable[str] = ()) -> list[Violation]:
    """PII in a model ``reply`` that is not in this customer's own ``context_texts`` (their turns, their orders and
    tool results): i.e. another customer's data leaking through the model. ``allow``: the shop's own public details
    (after-sales address, hotline) — a span inside one is never flagged. Each hit's suggestion is the placeholder."""
    allow = sorted({a for a in allow if a}, key=len, reverse=True)
    allow_re = re.compile("(?=(" + "|".join(re.escape(a) for a in allow) + "))") if allow else None
    return _scan(reply, context_texts, allow_re)


def _scan(reply: str, context_texts: list[str], allow_re: re.Pattern[str] | None) -> list[Violation]:
    contexts = tuple(str(c) for c in context_texts or [])
    own = _own_pii(contexts)
    joined = "\n".join(contexts)
    protected = _protected(reply, allow_re)
    hits = []
    for kind, start, end, norm in find_pii(reply):
        if norm in own or reply[start:end] in joined or _masked_match(norm, own):
            continue
        if any(ps < end and start < pe for ps, pe in protected):  # detectors may extend past the phrase
            continue
        hits.append(Violation(f"pii-leak:{kind}", "privacy", ART_PII, start, end, reply[start:end],
                              pii.PLACEHOLDERS[kind]))
    return hits

