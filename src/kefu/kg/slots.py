"""Typed slots: how a model refers to a shop fact without writing it.

A model writes ``[到手价]``, ``[运单号]`` or JDDC's own placeholders (``[订单x]``, ``[金额x]``) where a fact goes;
``fill_slots`` puts the request's facts in. The values come only from the facts retrieved for this request
(``kefu.kg.retrieval.Facts``: the asking customer's own orders, the products named), so a slot can never pull in
another customer's order or a price the shop does not charge. A slot with no single value for this request stays
unfilled and the reply fails verification (``kefu.serve.verify``): the customer never sees ``[运单号]`` or a guess.

``slotify`` goes the other way for training data: the facts an agent's reply states become slots, so the model
learns to refer to facts rather than to remember them.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from kefu.text.claims import claims
from kefu.text.numbers import format_fen

# slot -> what it stands for; JDDC's placeholders map onto the same names
SLOTS: dict[str, str] = {
    "商品": "the product under discussion (name)", "价格": "its list price", "到手价": "payable after promotions",
    "库存": "units in stock", "订单号": "the asker's order number", "订单状态": "that order's status",
    "实付": "what the order paid", "快递": "the carrier", "运单号": "the tracking number",
    "物流": "the latest tracking event", "退货天数": "return window", "换货天数": "exchange window",
    "保修天数": "repair window",
}
WORD_SLOTS = frozenset({"商品", "快递", "订单状态", "物流"})  # said in words; the other slots are figures
JDDC_SLOTS = {"订单": "订单号", "金额": "到手价", "站点": "物流", "姓名": "称呼", "地址": "收货地址"}
# always fillable without facts: a polite form of address, and the address the order holds (never spelled out)
FIXED = {"称呼": "亲", "收货地址": "您的收货地址"}
SLOT = re.compile(r"\[(?P<name>[^\[\]\s\d]{1,8}?)(?P<jddc>x)?\]")


def _unique(values: Iterable[Any]) -> Any | None:
    distinct = list(dict.fromkeys(v for v in values if v not in (None, "")))
    return distinct[0] if len(distinct) == 1 else None


def slot_values(facts: Any, tool_result: dict | None = None) -> dict[str, str]:
    """Each slot's text for this request, from ``facts`` (a ``Facts`` or its ``facts`` list) and an order tool's
    result; a slot is present only when this request's facts give it exactly one value."""
    items = list(getattr(facts, "facts", facts) or [])
    if isinstance(tool_result, dict) and tool_result.get("order_no"):
        items.append({"type": "order", "data": tool_result})
    of = {kind: [f.get("data") or {} for f in items if isinstance(f, dict) and f.get("type") == kind]
          for kind in ("product", "price", "order", "logistics", "policy")}
    orders = of["order"]
    shipments = [o.get("shipment") or {} for o in orders]
    events = [(s.get("events") or [{}])[-1] for s in shipments if s]
    found: dict[str, Any] = {
        "商品": _unique(p.get("name") for p in of["product"]),
        "价格": _unique([p.get("list_fen") for p in of["price"]] + [p.get("price_fen") for p in of["product"]]),
        "到手价": _unique(p.get("total_fen", p.get("payable_fen")) for p in of["price"]),
        "库存": _unique(p.get("stock") for p in of["product"]),
        "订单号": _unique(o.get("order_no") for o in orders),
        "订单状态": _unique(o.get("status") for o in orders),
        "实付": _unique(o.get("paid_fen") for o in orders),
        "快递": _unique(s.get("carrier") for s in shipments if s),
        "运单号": _unique(s.get("tracking_no") for s in shipments if s),
        "物流": _unique(" ".join(str(e.get(k, "")) for k in ("location", "status")).strip() for e in events),
        "退货天数": _unique(p.get("return_days") for p in of["policy"]),
        "换货天数": _unique(p.get("exchange_days") for p in of["policy"]),
        "保修天数": _unique(p.get("repair_days") for p in of["policy"]),
    }
    money = {"价格", "到手价", "实付"}
    days = {"退货天数", "换货天数", "保修天数"}
    out = {}
    for name, value in found.items():
        if value is None:
            continue
        out[name] = f"¥{format_fen(int(value), short=True)}" if name in money else (
            f"{value}天" if name in days else f"{value}件" if name == "库存" else str(value))
    if "到手价" not in out and "实付" in out:
        out["到手价"] = out["实付"]  # JDDC's [金额x] about an order is what it paid
    return out


def _canonical(match: re.Match) -> str:
    name = match.group("name")
    return JDDC_SLOTS.get(name, name) if match.group("jddc") else name


def fill_slots(text: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every known slot filled from ``values``; returns (text, the slots left unfilled). Bracketed
    words that are not slots (【活动】, [微笑]) are left alone."""
    unfilled: list[str] = []

    def fill(m: re.Match) -> str:
        name = _canonical(m)
        if name in FIXED:
            return FIXED[name]
        if name not in SLOTS and not m.group("jddc"):
            return m.group()
        if name in values:
            return values[name]
        unfilled.append(m.group())
        return m.group()

    return SLOT.sub(fill, text), unfilled


def slotify(text: str, values: dict[str, str]) -> str:
    """Training text with each stated fact replaced by its slot: names and words first, verbatim (a product name
    may hold a figure: 珠峰800蓬鹅绒羽绒服), then figures by what they say, not how they are written (``599元`` is
    the slot whose value is ``¥599``). The inverse of ``fill_slots`` for the values this turn's facts give."""
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if name in WORD_SLOTS and len(value) >= 2:
            text = text.replace(value, f"[{name}]")
    by_key = {}
    for name, value in values.items():
        for claim in claims(value) if name not in WORD_SLOTS else ():
            by_key.setdefault(claim.key, name)
    spans = [(c.start, c.end, by_key[c.key]) for c in claims(text) if c.key in by_key]
    for start, end, name in sorted(spans, reverse=True):
        text = text[:start] + f"[{name}]" + text[end:]
    return text


FIGURE_KINDS = frozenset({"order_no", "tracking_no", "money", "discount", "date", "time", "qty", "number", "sku"})


def states_figures(text: str) -> bool:
    """Whether ``text`` states a figure of its own (``claims``: an amount, number, date, order or tracking number,
    SKU; statuses are words, slots and JDDC's placeholders are no figure)."""
    return any(claim.kind in FIGURE_KINDS for claim in claims(text))
