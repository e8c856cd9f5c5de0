"""Tier-2 business annotations: one intent per customer turn and e-commerce entities in every turn.

:class:`RuleAnnotator` uses keyword lexicons (:mod:`kefu.data.keywords`, plus the shop's catalogue when given) and
regular expressions; it is behind the :class:`Annotator` protocol so a learned tagger can replace it. Lexicons are
compiled into trie-shaped regexes so matching costs one pass per turn however many terms there are.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kefu.data import keywords as kw
from kefu.data.taxonomy import ENTITY_TYPES, INTENTS
from kefu.text import trie_regex
from kefu.text.numbers import DISCOUNT, MONEY, NUMERAL_CHARS, cn_number, money_fen, parse_discount, parse_money_fen
from kefu.types import Entity, KefuError, Turn

__all__ = ["Annotator", "RuleAnnotator", "Catalogue", "ENTITY_TYPES", "INTENTS", "trie_regex"]


class Annotator(Protocol):
    """Anything that labels a dialogue: intents (one per ``user`` turn, ids of ``INTENTS``) and entities."""

    def annotate(self, turns: list[Turn]) -> tuple[list[str], list[Entity]]: ...


def _fen(amount: str) -> str | None:
    """Yuan as text (``"299"``, ``"49.9"``, ``"三百"``) -> integer fen as text (entity values are strings)."""
    fen = parse_money_fen(amount)
    return None if fen is None else str(fen)


_NUM = r"(?:\d+|[零一二两俩三四五六七八九十百千]+)"
# One pass per turn finds the rule-based entities; at one position the first alternative that matches wins.
# The leading lookahead lets the regex engine skip positions that cannot start any rule (5x faster).
PATTERNS = re.compile(
    rf"(?=[满每订单{NUMERAL_CHARS}A-Z¥￥人\[<今明后大昨前本这下周月年马尽双])(?:"
    r"(?P<promo_full>(?:每满|满)(?P<pf_t>\d+(?:\.\d+)?)(?:元|块)?[减-](?P<pf_r>\d+(?:\.\d+)?)(?:元|块)?)"
    rf"|(?P<promo_disc>{DISCOUNT})"
    r"|(?P<tracking>(?<![A-Za-z0-9])(?:SF|YT|ZTO|JT|JDV?|YD|STO|EMS|DPK|DB)\d{9,16}(?![A-Za-z0-9])|\[物流单号\])"
    r"|(?P<order>(?:订单号?|单号)[:：\s]*(?P<order_no>\d{10,20})|(?<!\d)\d{16}(?!\d)|\[订单x\]|\[订单号\]|<ORDER(?:_NO)?>)"
    rf"|(?P<money>{MONEY.pattern}|\[金额x\])"
    r"|(?P<date>(?P<d_y>\d{4})[-/年.](?P<d_m>\d{1,2})[-/月.](?P<d_d>\d{1,2})[日号]?|(?P<d_m2>\d{1,2})月(?P<d_d2>\d{1,2})[日号]"
    r"|\[日期x\]|\[时间x\])"
    rf"|(?P<duration>(?P<du_n>{_NUM})\s*(?:个)?(?P<du_u>工作日|天|小时|周|个月)(?:之内|以内|内|左右|后)?)"
    r"|(?P<relative>今天|明天|后天|大后天|昨天|前天|今晚|明早|明晚|本周|这周|下周[一二三四五六日天]?|周末|月底|月初|年底"
    r"|马上|尽快)"
    rf"|(?P<quantity>(?P<q_n>{_NUM})\s*(?:件|双|个|条|顶|套|只|瓶|包|箱|台|份|张|盒|袋|支|副|把))"
    r"|(?P<size>(?P<s_n>(?:3[0-9]|4[0-8])(?:\.5)?)\s*码|(?P<s_h>1[4-9]\d)/\d{2,3}[AB]"
    r"|(?<![A-Za-z0-9])(?P<s_l>[2-5]XL|X{1,3}L|XX?S|S|M|L)(?![A-Za-z0-9]))"
    r"|(?P<sku>(?<![A-Za-z0-9])[A-Z]{2,3}-\d{4,6}(?![0-9])))"
)
_RELATIVE_DAYS = {"今天": "+0d", "今晚": "+0d", "明天": "+1d", "明早": "+1d", "明晚": "+1d", "后天": "+2d",
                  "大后天": "+3d", "昨天": "-1d", "前天": "-2d"}
_DURATION_UNITS = {"天": "D", "工作日": "WD", "小时": "H", "周": "W", "个月": "M"}


def _lower(text: str) -> str:
    """Lower-case without changing offsets (a few characters grow under lower(); keep the text then)."""
    low = text.lower()
    return low if len(low) == len(text) else text


@dataclass
class Catalogue:
    """Entity vocabularies from a shop's products.csv (see examples/shop/SCHEMA.md)."""

    products: dict[str, str] = field(default_factory=dict)  # surface form -> sku
    brands: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    colors: set[str] = field(default_factory=set)
    sizes: set[str] = field(default_factory=set)
    materials: set[str] = field(default_factory=set)
    product_colors: dict[str, list[str]] = field(default_factory=dict)  # sku -> colours
    product_sizes: dict[str, list[str]] = field(default_factory=dict)  # sku -> sizes

    @classmethod
    def from_csv(cls, path: str | Path) -> "Catalogue":
        path = Path(path)
        try:
            handle = open(path, encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise KefuError(f"{path}: cannot read catalogue: {exc.strerror or exc}") from None
        cat = cls()
        with handle:
            reader = csv.DictReader(handle)
            missing = {"sku", "name"} - set(reader.fieldnames or [])
            if missing:
                raise KefuError(f"{path}: catalogue misses column(s) {', '.join(sorted(missing))}")
            for row in reader:
                sku = (row.get("sku") or "").strip()
                split = lambda key: [v.strip() for v in re.split(r"[|/、,，]", row.get(key) or "") if v.strip()]
                for name in [row.get("name") or "", *split("aliases")]:
                    if name.strip():
                        cat.products[name.strip()] = sku
                if (row.get("brand") or "").strip():
                    cat.brands.add(row["brand"].strip())
                if (row.get("category") or "").strip():
                    cat.categories.add(row["category"].strip())
                colors, sizes = split("colors"), split("sizes")
                cat.colors.update(colors)
                cat.sizes.update(sizes)
                cat.materials.update(split("material"))
                if sku:
                    cat.product_colors[sku] = colors
                    cat.product_sizes[sku] = sizes
        return cat


class RuleAnnotator:
    """Rules + lexicons. ``annotate(turns)`` returns (intent per user turn, entities in all turns)."""

    def __init__(self, catalogue: Catalogue | None = None):
        self.catalogue = catalogue or Catalogue()
        cat = self.catalogue
        terms: dict[str, tuple[str, str | None]] = {}  # lower-cased surface -> (type, value); later wins
        for words, etype in ((kw.CATEGORIES, "category"), (kw.MATERIALS, "material"), (kw.COLORS, "color"),
                             (kw.BRANDS, "brand"), (kw.PROMOTION_WORDS, "promotion")):
            for word in words:
                terms[word.lower()] = (etype, word)
        for surface, canonical in kw.CARRIERS.items():
            terms[surface.lower()] = ("logistics", canonical)
        for words, etype in ((cat.categories, "category"), (cat.materials, "material"), (cat.colors, "color"),
                             (cat.brands, "brand")):
            for word in words:
                terms[word.lower()] = (etype, word)
        for size in cat.sizes:  # catalogue sizes only when they are words (S/M/L are found by the size rule)
            if not re.fullmatch(r"[A-Za-z0-9.]+", size):
                terms[size.lower()] = ("size", size)
        for name, sku in cat.products.items():
            terms[name.lower()] = ("product", sku or name)
        for size in ("均码", "加大码", "大码", "小码"):
            terms[size] = ("size", size)
        self.terms = terms
        # matched against lower-cased text: case-sensitive tries get the engine's first-character fast path
        self.lexicon = re.compile(trie_regex(sorted(terms))) if terms else None
        self.intent_of: dict[str, tuple[int, str]] = {}  # cue word -> (priority rank, intent)
        for rank, (intent, words) in enumerate(kw.INTENT_KEYWORDS):
            if intent not in INTENTS:
                raise KefuError(f"keyword lexicon names unknown intent {intent!r}")
            for word in words:
                self.intent_of.setdefault(word.lower(), (rank, intent))
        self.intent_re = re.compile(trie_regex(sorted(self.intent_of)))
        self._cache: dict[tuple[str, str], tuple[str | None, tuple]] = {}

    # -- intents ---------------------------------------------------------------------------------------------
    def intent(self, text: str, entity_types: set[str] | None = None) -> str:
        """The intent of one customer turn: the highest-priority intent whose cue words occur."""
        best, best_rank = None, len(self.intent_of) + 1
        for match in self.intent_re.finditer(_lower(text)):
            rank, intent = self.intent_of[match.group()]
            if rank < best_rank:
                best, best_rank = intent, rank
        if best is not None:
            return best
        if entity_types:
            if "promotion" in entity_types:
                return "promotion_inquiry"
            if "order_no" in entity_types or "logistics" in entity_types:
                return "order_status"
            if entity_types & {"product", "category", "brand", "material", "color", "size"}:
                return "product_inquiry"
        return "other"

    # -- entities --------------------------------------------------------------------------------------------
    def entities(self, text: str, turn: int) -> list[Entity]:
        """Entities of one turn, non-overlapping (at a position the longer match wins, then rules before words)."""
        found: list[tuple[int, int, int, str, str | None]] = []  # (start, -len, order, type, value)
        for match in PATTERNS.finditer(text):
            etype, value = self._rule_entity(match)
            if etype:
                found.append((match.start(), match.start() - match.end(), 0, etype, value))
        if self.lexicon is not None:
            for match in self.lexicon.finditer(_lower(text)):
                etype, value = self.terms[match.group().lower()]
                found.append((match.start(), match.start() - match.end(), 1, etype, value))
        if not found:
            return []
        found.sort()
        out: list[Entity] = []
        end = -1
        for start, neg_len, _, etype, value in found:
            if start < end:
                continue
            end = start - neg_len
            out.append(Entity(etype, text[start:end], turn, start, end, value))
        return out

    @staticmethod
    def _rule_entity(m: re.Match) -> tuple[str | None, str | None]:
        """(type, normalised value) of one PATTERNS match; ``lastgroup`` names the alternative that matched."""
        kind = m.lastgroup
        g = m.group
        if kind == "money":
            if g("money") == "[金额x]":
                return "money", None
            fen = money_fen(m)
            return ("money", str(fen)) if fen is not None else (None, None)
        if kind == "quantity":
            n = cn_number(g("q_n"))
            return ("quantity", str(n)) if n is not None else (None, None)
        if kind == "duration":
            n = cn_number(g("du_n"))
            return ("time", f"P{n}{_DURATION_UNITS[g('du_u')]}") if n is not None else (None, None)
        if kind == "relative":
            return "time", _RELATIVE_DAYS.get(g("relative"), g("relative"))
        if kind == "size":
            if g("s_n"):
                return "size", g("s_n")
            if g("s_h"):
                return "size", g("size")
            return "size", g("s_l").upper()
        if kind == "promo_full":
            t, r = _fen(g("pf_t")), _fen(g("pf_r"))
            prefix = "per_full_reduction" if g("promo_full").startswith("每") else "full_reduction"
            return "promotion", f"{prefix}:{t}:{r}"
        if kind == "promo_disc":
            rate = parse_discount(g("promo_disc"))
            return ("promotion", f"discount:{rate}") if rate is not None else (None, None)
        if kind == "tracking":
            return "logistics", None if g("tracking").startswith("[") else g("tracking")
        if kind == "order":
            return "order_no", g("order_no") or (g("order") if g("order").isdigit() else None)
        if kind == "date":
            if g("d_y"):
                return "time", f"{int(g('d_y')):04d}-{int(g('d_m')):02d}-{int(g('d_d')):02d}"
            if g("d_m2"):
                return "time", f"--{int(g('d_m2')):02d}-{int(g('d_d2')):02d}"
            return "time", None
        if kind == "sku":
            return "product", g("sku")
        return None, None

    CACHE_SIZE = 100_000

    def annotate(self, turns: list[Turn]) -> tuple[list[str], list[Entity]]:
        """Each turn is labelled on its own, so labels of repeated turns (agent templates, "好的谢谢") are cached."""
        intents: list[str] = []
        entities: list[Entity] = []
        cache = self._cache
        for i, turn in enumerate(turns):
            if turn.role == "system":
                continue
            key = (turn.role, turn.content)
            hit = cache.get(key)
            if hit is None:
                found = self.entities(turn.content, 0)
                intent = self.intent(turn.content, {e.type for e in found}) if turn.role == "user" else None
                hit = (intent, tuple((e.type, e.text, e.start, e.end, e.value) for e in found))
                if len(cache) >= self.CACHE_SIZE:
                    cache.clear()
                cache[key] = hit
            entities.extend(Entity(t, x, i, a, b, v) for t, x, a, b, v in hit[1])
            if turn.role == "user":
                intents.append(hit[0])
        return intents, entities
