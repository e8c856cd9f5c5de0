"""The entry points: ``check`` runs every rule family on agent text, ``rewrite`` returns a compliant version."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from kefu.clock import shop_now
from kefu.safety.compliance.adlaw import ComplianceRules, _absolute_hits, _rule_hits, _rules
from kefu.safety.compliance.claims import _promotion_hits
from kefu.safety.compliance.leak import _scan
from kefu.safety.compliance.negation import clause_bounds, negated
from kefu.safety.compliance.violation import Violation
from kefu.types import KefuError

def _normalise(text: str) -> str:
    """NFKC folds full-width forms (１００％, ＮＯ．１) so they cannot dodge the rules; lengths stay the same for the
    characters we match, so spans still index the original text."""
    return unicodedata.normalize("NFKC", text) if text.isascii() is False else text


def check(text: str, *, rules: ComplianceRules | None = None, promotions: list[dict[str, Any]] | None = None,
          context_texts: list[str] | None = None, now: datetime | None = None) -> list[Violation]:
    """All violations in agent ``text``, sorted by position.

    Advertising-law hits inside a negated or refusing statement (不能保证治愈, 永久保修是不支持的) are not claims and are
    dropped (``kefu.safety.compliance.negation``); banned content, promotion claims and PII are never exempted.
    ``promotions``: the shop's promotions (dicts with ``description`` and/or ``tiers``/``rate_percent``..., and
    ``starts_at``/``ends_at``); when given, 满X减Y / 每满X减Y / N折 claims that no promotion in force at ``now`` (default:
    the shop clock, ``kefu.clock.shop_now``) supports are flagged — ``promotion-expired`` / ``promotion-not-started``
    when only an expired / future promotion backs them, else ``promotion-mismatch`` (``[]``: nothing is in force).
    ``context_texts``: this customer's own texts; when given, PII not found in them is flagged (see ``scan_output``).
    """
    if not isinstance(text, str):
        raise KefuError(f"compliance.check expects a str, got {type(text).__name__}")
    rules = _rules(rules)
    folded = _normalise(text)
    if len(folded) != len(text):  # NFKC changed lengths (rare ligatures): match the original to keep spans exact
        folded = text
    hits = _rule_hits(folded, rules) + _absolute_hits(folded, rules)  # _rule_hits refreshes the compiled cache
    hits = [h for h in hits if h.category != "advertising" or not negated(folded, h.start, h.end)]
    if promotions is not None:
        hits += _promotion_hits(folded, promotions, now)
    if context_texts is not None:
        hits += _scan(folded, context_texts, rules._allow)  # rules._allow compiled by _rule_hits above
    for hit in hits:
        hit.text = text[hit.start:hit.end]
    return sorted(hits, key=lambda v: (v.start, -(v.end - v.start)))


_clause_span = clause_bounds


def _apply(text: str, hits: list[Violation], rules: ComplianceRules) -> str:
    compiled = {r.id: r for r in rules._compiled()}
    edits: list[tuple[int, int, str]] = []
    for hit in hits:
        rule = compiled.get(hit.rule)
        if rule is not None and rule.replacement is None and rule.clause is not None:
            start, end = _clause_span(text, hit.start, hit.end)
            replacement = rule.clause
        else:
            start, end = hit.start, hit.end
            replacement = hit.suggestion if hit.suggestion is not None else "*" * (end - start)
        if any(s < end and start < e for s, e, _ in edits):
            continue  # already covered by an earlier (wider or earlier) edit
        edits.append((start, end, replacement))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def rewrite(text: str, *, rules: ComplianceRules | None = None, promotions: list[dict[str, Any]] | None = None,
            context_texts: list[str] | None = None, max_passes: int = 4,
            now: datetime | None = None) -> tuple[str, list[Violation]]:
    """A compliant version of ``text`` and the violations found (spans index the input). Terms are replaced
    (最好 -> 很好, 第一 -> 领先, 绝对 deleted), wrong promotion claims corrected, banned words starred, leaked PII
    masked, and clauses making medical/education/investment/result promises replaced by a neutral statement.

    Removing one hit can expose another (a phone number glued to "NO.1" becomes a separate number once "NO.1" is
    replaced), so passes repeat until the text is clean; after ``max_passes`` whatever is still flagged is starred.
    """
    rules = _rules(rules)
    if promotions is not None and now is None:
        now = shop_now()  # one moment for every pass
    first = check(text, rules=rules, promotions=promotions, context_texts=context_texts, now=now)
    hits, out = first, text
    for _ in range(max_passes):
        if not hits:
            break
        out = _apply(out, hits, rules)
        hits = check(out, rules=rules, promotions=promotions, context_texts=context_texts, now=now)
    for hit in sorted(hits, key=lambda v: v.start, reverse=True):  # last resort: never return a flagged span
        out = out[:hit.start] + "*" * (hit.end - hit.start) + out[hit.end:]
    return out, first
