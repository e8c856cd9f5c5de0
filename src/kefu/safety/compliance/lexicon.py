"""The advertising-law lexicon: ``adlaw_terms.yaml`` (terms grouped by category, each group with its legal basis,
its public source list and its rewrite), read once. ``adlaw`` builds its default rules from it and ``negation`` its
scope words; nothing else reads the file."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kefu.types import KefuError

LEXICON_PATH = Path(__file__).with_name("adlaw_terms.yaml")
_KINDS = ("term", "clause", "regex")


@dataclass(frozen=True)
class Group:
    """One category of the lexicon: ``terms`` (term -> replacement for kind ``term``; the literal words otherwise)."""

    id: str
    kind: str
    article: str
    source: str
    terms: dict[str, str]
    patterns: tuple[str, ...] = ()
    rule: str | None = None  # clause/regex kinds: the rule id every hit carries
    clause: str | None = None  # clause kind: what replaces the clause around a hit
    replacement: str | None = None  # regex kind: a regex template

    def pattern(self) -> str:
        """Literal words (longest first) and the group's patterns as one regex."""
        words = [re.escape(t) for t in sorted(self.terms, key=len, reverse=True)]
        return "|".join(words + [f"(?:{p})" for p in self.patterns])


@dataclass(frozen=True)
class Negation:
    """The words of the negation scope rule (see ``kefu.safety.compliance.negation``)."""

    max_gap: int
    before: tuple[str, ...]
    not_negators: tuple[str, ...]
    breaks: tuple[str, ...]
    refusal: tuple[str, ...]
    guarantee: tuple[str, ...]
    guarantee_negators: tuple[str, ...]


@dataclass(frozen=True)
class Lexicon:
    groups: tuple[Group, ...]
    allow: tuple[str, ...]
    negation: Negation

    def absolute(self) -> dict[str, str]:
        """Every term-kind word -> its compliant wording (``""`` deletes it)."""
        return {t: r for g in self.groups if g.kind == "term" for t, r in g.terms.items()}

    def articles(self) -> dict[str, str]:
        """Term-kind word -> the article its hits cite."""
        return {t: g.article for g in self.groups if g.kind == "term" for t in g.terms}

    def group_of(self) -> dict[str, str]:
        """Term-kind word or rule id -> the group id (for reports)."""
        out = {t: g.id for g in self.groups if g.kind == "term" for t in g.terms}
        out.update({g.rule: g.id for g in self.groups if g.rule})
        return out

    def promises(self) -> list[dict[str, str]]:
        """Clause and regex groups as ``ComplianceRules.promises`` entries (id, article, pattern, clause|replacement)."""
        out = []
        for g in self.groups:
            if g.kind == "term":
                continue
            entry = {"id": str(g.rule), "article": g.article, "pattern": g.pattern()}
            if g.kind == "clause":
                entry["clause"] = str(g.clause)
            else:
                entry["replacement"] = g.replacement or ""
            out.append(entry)
        return out


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise KefuError(f"{LEXICON_PATH.name}: {where} must be a list of words")
    return tuple(str(v) for v in value)


def _group(raw: Any, i: int) -> Group:
    where = f"groups[{i}]"
    if not isinstance(raw, dict) or raw.get("kind") not in _KINDS or not raw.get("id") or not raw.get("article"):
        raise KefuError(f"{LEXICON_PATH.name}: {where} needs id, kind ({'/'.join(_KINDS)}) and article")
    kind, terms = raw["kind"], raw.get("terms") or {}
    if kind == "term":
        if not isinstance(terms, dict):
            raise KefuError(f"{LEXICON_PATH.name}: {where}.terms must map term -> replacement")
        words = {str(k): "" if v is None else str(v) for k, v in terms.items()}
    else:
        words = {w: "" for w in _strings(terms, f"{where}.terms")} if terms else {}
        if not raw.get("rule") or (kind == "clause" and not raw.get("clause")):
            raise KefuError(f"{LEXICON_PATH.name}: {where} ({raw['id']}) needs `rule`" +
                            (" and `clause`" if kind == "clause" else ""))
    patterns = _strings(raw.get("patterns") or [], f"{where}.patterns")
    group = Group(str(raw["id"]), kind, str(raw["article"]), str(raw.get("source") or ""), words, patterns,
                  raw.get("rule"), raw.get("clause"), raw.get("replacement"))
    if kind != "term":
        try:
            re.compile(group.pattern())
        except re.error as exc:
            raise KefuError(f"{LEXICON_PATH.name}: {where} ({group.id}) has an invalid pattern: {exc}") from exc
    return group


@functools.cache
def lexicon() -> Lexicon:
    """The built-in lexicon (read and validated once per process)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(LEXICON_PATH.read_text(encoding="utf-8"), Loader=loader)
    neg = data.get("negation") or {}
    negation = Negation(int(neg.get("max_gap", 8)), *(_strings(neg.get(k) or [], f"negation.{k}") for k in
                        ("before", "not_negators", "breaks", "refusal", "guarantee", "guarantee_negators")))
    return Lexicon(tuple(_group(g, i) for i, g in enumerate(data.get("groups") or [])),
                   _strings(data.get("allow") or [], "allow"), negation)
