"""Response synthesis: the model's draft, corrected by KG facts and tool results, then the compliance filter.

Prices, dates and order status are never left to free generation: a price in the draft that no fact supports is
replaced by the fact (or the grounded fact line is appended when it is ambiguous which product is meant); a wrong
order status word is replaced by the tool's; unsupported dates are replaced by / followed by the recorded ones.
Streaming works sentence by sentence so every emitted piece has already been grounded and filtered.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from kefu.safety.compliance import rewrite
from kefu.text.claims import DATE, date_parts
from kefu.text.numbers import NUMBER, format_fen, money_mentions, parse_money_fen
from kefu.text.status import ORDER_STATUSES

log = logging.getLogger("kefu.serve.synth")

PROMO_AMOUNT = re.compile(rf"[满减送]\s*[¥￥]?({NUMBER})")
SENTENCE_END = re.compile(r"[。！？!?；;\n]")


@dataclass
class Grounding:
    """What the answer must agree with. ``prices``: product label -> fen. ``allowed_fen``: other amounts the facts
    state (promotion thresholds, paid totals) that the draft may quote. ``lines``: fact lines to append on doubt."""

    prices: dict[str, int] = field(default_factory=dict)
    allowed_fen: set[int] = field(default_factory=set)
    order_status: str | None = None
    dates: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    promotions: list[dict[str, Any]] | None = None
    context_texts: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.prices or self.order_status or self.dates)


def _price(fen: int) -> str:
    """How a grounded answer writes a price: ``¥399``, ``¥399.5``."""
    return "¥" + format_fen(fen, short=True)


def _iso_month_day(value: Any) -> list[str]:
    """A record's ISO timestamp (``2026-11-02T10:00:00+08:00``) as the date a reply states (``11月2日``), or []."""
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value):
        return [f"{int(value[5:7])}月{int(value[8:10])}日"]
    return []


def _month_day(text: str) -> tuple[int, int] | None:
    """(month, day) of the first date in ``text`` (``kefu.text.claims.DATE``), or None."""
    for m in DATE.finditer(text):
        parts = date_parts(m)
        if parts is not None:
            return parts[1], parts[2]
    return None


def ground(draft: str, g: Grounding) -> tuple[str, list[str]]:
    """Correct ``draft`` against ``g``; returns (text, fixes) where fixes describe each change."""
    fixes: list[str] = []
    text = draft
    append: list[str] = []
    if g.prices:
        ok = set(g.prices.values()) | g.allowed_fen
        for start, end, fen in reversed(money_mentions(text)):
            if fen in ok:
                continue
            if len(set(g.prices.values())) == 1:
                fact = next(iter(g.prices.values()))
                text = text[:start] + _price(fact) + text[end:]
                fixes.append(f"price {_price(fen)} -> {_price(fact)}")
            else:
                fixes.append(f"price {_price(fen)} not in facts")
                append.extend(f"{name}：{_price(p)}" for name, p in g.prices.items())
    if g.order_status:
        for status in ORDER_STATUSES:
            if status != g.order_status and status in text:
                text = text.replace(status, g.order_status)
                fixes.append(f"status {status} -> {g.order_status}")
    if g.dates:
        known = {_month_day(d) for d in g.dates}
        for m in reversed(list(DATE.finditer(text))):
            parts = date_parts(m)
            if parts is not None and parts[1:] not in known:
                if len(g.dates) == 1:
                    text = text[:m.start()] + g.dates[0] + text[m.end():]
                    fixes.append(f"date {m.group()} -> {g.dates[0]}")
                else:
                    fixes.append(f"date {m.group()} not in facts")
                    append.extend(g.lines)
    if append:
        lines = list(dict.fromkeys(x for x in append if x not in text))
        if lines:
            text = text.rstrip() + "\n（以系统记录为准）" + "；".join(lines)
    return text, fixes


def comply(text: str, g: Grounding | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The compliance filter (safety stage), run last; returns the safe text and the violations fixed."""
    safe, violations = rewrite(text, promotions=(g.promotions if g else None),
                               context_texts=(g.context_texts if g else None))
    return safe, [v.to_dict() if hasattr(v, "to_dict") else dict(v) for v in violations]


def synthesize(draft: str, g: Grounding | None) -> tuple[str, list[str], list[dict[str, Any]]]:
    """Ground then filter a whole answer."""
    fixes: list[str] = []
    if g is not None:
        draft, fixes = ground(draft, g)
    safe, violations = comply(draft, g)
    return safe, fixes, violations


class SentenceStream:
    """Grounds and filters a streamed draft one sentence at a time; ``feed`` returns the pieces ready to send."""

    def __init__(self, g: Grounding | None):
        self.g = g
        self.buffer = ""
        self.fixes: list[str] = []
        self.violations: list[dict[str, Any]] = []
        self.sent: list[str] = []

    def _process(self, sentence: str) -> str:
        if self.g is not None:
            sentence, fixes = ground(sentence, Grounding(self.g.prices, self.g.allowed_fen, self.g.order_status,
                                                         self.g.dates, [], self.g.promotions, self.g.context_texts))
            self.fixes += fixes
        safe, violations = comply(sentence, self.g)
        self.violations += violations
        self.sent.append(safe)
        return safe

    def feed(self, delta: str) -> list[str]:
        self.buffer += delta
        out = []
        while True:
            m = SENTENCE_END.search(self.buffer)
            if not m:
                break
            sentence, self.buffer = self.buffer[:m.end()], self.buffer[m.end():]
            out.append(self._process(sentence))
        return [x for x in out if x]

    def flush(self, drop_partial: bool = False) -> list[str]:
        """What is left to send at the end of the draft: its last sentence, unless ``drop_partial`` (the token budget
        cut the draft mid-sentence after complete ones went out: "……您可以联系" is left unsaid), then the grounding
        note when a figure was corrected."""
        out = []
        if self.buffer and not drop_partial:
            out.append(self._process(self.buffer))
        self.buffer = ""
        if self.g is not None and self.g.lines and any("not in facts" in f for f in self.fixes):
            extra = "\n（以系统记录为准）" + "；".join(self.g.lines)
            self.sent.append(extra)
            out.append(extra)
        return [x for x in out if x]

    @property
    def text(self) -> str:
        return "".join(self.sent)


def grounding_from(facts: Any = None, tool_results: Iterable[dict[str, Any]] = (),
                   promotions: list[dict[str, Any]] | None = None) -> Grounding:
    """Build a Grounding from the KG retrieval (``Facts``: fact dicts with ``type``, ``subject``, ``text``,
    ``data``) and tool results. Every amount the facts state may be quoted; a product's price is its payable price
    when a price fact exists, else its list price."""
    g = Grounding(promotions=promotions)
    list_prices: dict[str, int] = {}
    for fact in (getattr(facts, "facts", None) or []):
        if not isinstance(fact, dict):
            continue
        kind, subject, data = fact.get("type"), str(fact.get("subject", "")), fact.get("data") or {}
        if fact.get("text"):
            g.context_texts.append(str(fact["text"]))
        if kind == "price" and isinstance(data.get("payable_fen"), int):
            g.prices[subject] = data["payable_fen"]
            g.lines.append(str(fact.get("text", "")))
        elif kind == "product" and isinstance(data.get("price_fen"), int):
            list_prices[subject] = data["price_fen"]
        elif kind == "order":
            if data.get("status") in ORDER_STATUSES:
                g.order_status = data["status"]
                g.lines.append(str(fact.get("text", "")))
            g.dates.extend(_iso_month_day(data.get("created_at")))
        for key, value in data.items():
            if key.endswith("_fen") and isinstance(value, int):
                g.allowed_fen.add(value)
    for subject, fen in list_prices.items():
        g.allowed_fen.add(fen)
        if subject not in g.prices:
            g.prices[subject] = fen
            g.lines.append(f"{subject} 标价 {_price(fen)}")
    block = getattr(facts, "prompt_block", None)
    if block:
        for _s, _e, fen in money_mentions(str(block)):
            g.allowed_fen.add(fen)
        for m in PROMO_AMOUNT.finditer(str(block)):  # 满300减50: thresholds and reductions may be quoted
            fen = parse_money_fen(m.group(1))
            if fen is not None:
                g.allowed_fen.add(fen)
        for m in DATE.finditer(str(block)):
            if date_parts(m) is not None:
                g.dates.append(m.group())
    for result in tool_results:
        if not isinstance(result, dict):
            continue
        status = result.get("status")
        if status in ORDER_STATUSES:
            g.order_status = status
            g.lines.append(f"订单状态：{status}")
        for key, value in result.items():
            if key.endswith("_fen") and isinstance(value, int):
                g.allowed_fen.add(value)
        for key in ("created_at", "shipped_at", "eta", "delivered_at"):
            g.dates.extend(_iso_month_day(result.get(key)))
        g.context_texts.append(str(result))
    g.dates = list(dict.fromkeys(g.dates))
    return g
