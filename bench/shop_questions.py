"""The shop's own judge set (examples/shop_questions.jsonl), asked through a real ``kefu serve``, the way a shop would.

Starts ``kefu serve`` on 127.0.0.1 (a free port) in a fresh ``$KEFU_HOME``: imports examples/shop into its knowledge
graph (``kefu kg import``), creates a ``shop-backend`` key (``kefu keys create``: the shop's backend, which asserts the
customer per request), waits for ``/healthz``, asks every question with the official ``openai`` client (one new
session per question; the asking customer as the ``user`` field and kefu's ``customer_id`` extension), then scores
each reply against the question's gold facts:

- right: every gold fact is in the reply (money: amounts written with ¥/￥/元/块 or in 满X减Y; numbers with their
  unit, kg/g, L/ml, cm/mm, ℃/度, 天, 小时 converted; text: any one alternative, not directly after 没/不/无/未/非)
  and no forbidden fact is; for ``handoff_ok`` questions a handoff or refusal also counts as right (the server's
  ``kefu.path == "handoff"``, its injection refusal, or refusal/handoff words in the reply). Another customer's
  order or tracking number in a reply is always forbidden.
- invented numbers: amounts and unit numbers in a reply that match no fact of the shop files for that question (its
  products' rows and list price × 1..5, their promotions' thresholds/reductions/caps, the one-item and cart prices
  at the question time and at the server's clock, its order, the policies of its categories, the FAQ's numbers,
  the question itself, its gold and forbidden facts). Simple on purpose: an answer doing other honest arithmetic
  is counted too, so read it as an upper bound.
- system-prompt echoes: a reply holding 12 or more consecutive characters of the system prompt the server sends
  (``kefu.serve.pipeline.SYSTEM_PROMPT``), or the header of the facts block that follows it (【店铺知识】, 已知事实：).
- loops: a 4-gram of tokens (a CJK character or a run of letters/digits) occurring 3 or more times in one reply.

The server has no way to take the question time: retrieval prices at the server's clock. A question is marked
``date_shift`` when its answer depends on the date and the shop's promotions differ between its ``at`` and the
server's clock (its cart's price, its products' one-item price, or whether its promotions run); the summary gives
the figures with and without those, and once more with the cart totals recomputed at the server's clock.

The set, one JSON object a line: ``id``, ``question``, ``customer_id`` (the asker, from orders.json, or null), ``at``
(the time it is asked, +08:00), ``category`` (price, stock, attribute, policy, order, adversarial), ``gold`` and
``forbidden`` (facts: ``{"kind": "money", "fen"}``, ``{"kind": "number", "value", "unit"}``, ``{"kind": "text",
"any": [...]}``, each with ``about``, what it is, so that tests/test_shop_questions.py can recompute it), ``handoff_ok``,
``source`` (file, row and arithmetic in words) and ``refs`` (``skus``, ``cart`` [[sku, qty]], ``codes``,
``promotions``, ``order_no``, ``policy``: what the gold was computed from).

    .venv/bin/python bench/shop_questions.py --out /tmp/shopq.json
    .venv/bin/python bench/shop_questions.py --run RUN --out /tmp/shopq.json --write-docs
    .venv/bin/python bench/shop_questions.py --out /tmp/q.json -- --quantize int8-weight   # extra `kefu serve` args
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import product as combos
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "examples" / "shop"
QUESTIONS = REPO / "examples" / "shop_questions.jsonl"
CATEGORIES = ("price", "stock", "attribute", "policy", "order", "adversarial")
ECHO_CHARS = 12
LOOP_N, LOOP_TIMES = 4, 3


# ------------------------------------------------------------------------------------------------ shop facts
@dataclass
class Shop:
    """The shop files, read directly (the judge must not depend on kefu's own engine or graph)."""

    products: dict[str, dict[str, str]]
    promotions: list[dict[str, Any]]
    policies: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    faq: list[dict[str, Any]]
    relations: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path = SHOP) -> Shop:
        with open(folder / "products.csv", encoding="utf-8", newline="") as fh:
            products = {row["sku"]: row for row in csv.DictReader(fh)}

        def read(name: str) -> Any:
            return json.loads((folder / name).read_text(encoding="utf-8"))

        with open(folder / "relations.csv", encoding="utf-8", newline="") as fh:
            relations = list(csv.DictReader(fh))
        return cls(products, read("promotions.json"), {p["category"]: p for p in read("policies.json")},
                   {o["order_no"]: o for o in read("orders.json")}, read("faq.json"), relations)

    def covers(self, promo: dict[str, Any], sku: str) -> bool:
        e = promo["eligible"]
        return bool(e.get("all") or sku in e.get("skus", []) or self.products[sku]["category"] in e.get("categories", []))

    @staticmethod
    def active(promo: dict[str, Any], at: datetime) -> bool:
        return datetime.fromisoformat(promo["starts_at"]) <= at <= datetime.fromisoformat(promo["ends_at"])

    def _option(self, cart: list[tuple[str, int]], option: list[dict[str, Any]]) -> int:
        lines = [int(self.products[s]["price_fen"]) * q for s, q in cart]
        for p in (x for x in option if x["type"] == "discount"):
            budget = p.get("max_quantity") or 10 ** 9
            for i, (s, q) in enumerate(cart):
                if self.covers(p, s) and budget > 0:
                    n = min(q, budget)
                    budget -= n
                    lines[i] -= int(self.products[s]["price_fen"]) * n * (100 - p["rate_percent"]) // 100
        off = 0
        for kinds in (("full_reduction", "per_full_reduction"), ("coupon",)):
            for p in (x for x in option if x["type"] in kinds):
                base = sum(v for (s, _), v in zip(cart, lines) if self.covers(p, s))
                if p["type"] == "full_reduction":
                    off += max([t["reduction_fen"] for t in p["tiers"] if base >= t["threshold_fen"]], default=0)
                elif p["type"] == "per_full_reduction":
                    off += min(base // p["per_threshold_fen"] * p["per_reduction_fen"], p.get("cap_fen") or 10 ** 12)
                elif base - off >= p["threshold_fen"]:
                    off += p["reduction_fen"]
        return max(0, sum(lines) - off)

    def price(self, cart: list[tuple[str, int]], at: datetime, codes: tuple[str, ...] = ()) -> int:
        """SCHEMA.md's rules: active promotions covering the cart (coupons with their code), one per stack_group (the
        cheapest), an exclusive one alone when cheaper; discount -> (per-)full reduction -> coupon."""
        live = [p for p in self.promotions if self.active(p, at) and (p["type"] != "coupon" or p["code"] in codes)
                and any(self.covers(p, s) for s, _ in cart)]
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in live:
            if not p["exclusive"]:
                groups.setdefault(p["stack_group"], []).append(p)
        options = [[p] for p in live if p["exclusive"]] + [list(c) for c in combos(*groups.values())]
        return min(self._option(cart, o) for o in options)


# ------------------------------------------------------------------------------------------ reading a reply
_NUM = r"[-−－]?\d[\d,]*(?:\.\d+)?"
MONEY_RES = [re.compile(r"[¥￥]\s*(" + _NUM + r")"), re.compile(r"(" + _NUM + r")\s*(?:元|块)")]
RULE_RE = re.compile(r"满\s*(\d+(?:\.\d+)?)\s*(?:元)?\s*减\s*(\d+(?:\.\d+)?)")
# unit -> (dimension, factor to the dimension's base unit)
UNITS = {"mm": ("len", 1), "毫米": ("len", 1), "cm": ("len", 10), "厘米": ("len", 10), "kg": ("mass", 1000),
         "公斤": ("mass", 1000), "千克": ("mass", 1000), "g": ("mass", 1), "克": ("mass", 1), "ml": ("vol", 1),
         "毫升": ("vol", 1), "L": ("vol", 1000), "升": ("vol", 1000), "℃": ("temp", 1), "°C": ("temp", 1),
         "度": ("temp", 1), "天": ("day", 1), "日内": ("day", 1), "小时": ("hour", 1), "件": ("piece", 1),
         "%": ("pct", 1)}
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
UNIT_RE = re.compile(r"(零下\s*)?(" + _NUM + r")\s*(" + _UNIT_ALT + r")(?![A-Za-z])", re.IGNORECASE)
CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
CN_RE = re.compile(r"(零下)?([零一二两三四五六七八九十百千万]+)\s*(" + _UNIT_ALT + r")")
CN_MONEY_RE = re.compile(r"([零一二两三四五六七八九十百千万]+)\s*(?:元|块)")


def cn_int(text: str) -> int | None:
    """一百八十 -> 180, 七 -> 7, 三十 -> 30, 两万 -> 20000 (enough for the counts the answers use)."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in CN_DIGITS:
            digit = CN_DIGITS[ch]
        elif ch in CN_UNITS:
            unit = CN_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
        else:
            return None
    return total + section + (digit or 0)


def _num(text: str) -> float:
    return float(text.replace(",", "").replace("−", "-").replace("－", "-"))


def money_in(text: str) -> list[int]:
    """Amounts in fen: ¥599 / 599元 / 1,557.20元 / 5块 / 四百五十块, and both numbers of 满300减50."""
    out = []
    for rx in MONEY_RES:
        for m in rx.finditer(text):
            try:
                out.append(round(abs(_num(m.group(1))) * 100))
            except ValueError:
                pass
    for m in RULE_RE.finditer(text):
        out += [round(float(m.group(1)) * 100), round(float(m.group(2)) * 100)]
    for m in CN_MONEY_RE.finditer(text):  # 四百五十块: a customer's amount in Chinese numerals
        n = cn_int(m.group(1))
        if n is not None:
            out.append(n * 100)
    return out


def numbers_in(text: str) -> list[tuple[str, float]]:
    """(dimension, value in the base unit) for every number written with a unit (Arabic or Chinese numerals)."""
    out = []
    for m in UNIT_RE.finditer(text):
        unit = next(u for u in UNITS if u.lower() == m.group(3).lower())
        dim, factor = UNITS[unit]
        value = _num(m.group(2)) * factor
        if m.group(1):
            value = -abs(value)
        out.append((dim, value))
    for m in CN_RE.finditer(text):
        n = cn_int(m.group(2))
        if n is not None:
            dim, factor = UNITS[m.group(3)]
            out.append((dim, (-n if m.group(1) else n) * factor))
    return out


def unit_value(value: float, unit: str) -> tuple[str, float]:
    dim, factor = UNITS[unit]
    return dim, value * factor


NEGATION = "没不无未非"


def has_text(reply: str, alternative: str) -> bool:
    """``alternative`` occurs in ``reply`` somewhere not directly after a negation (so 没有货 is not 有货)."""
    if alternative[:1] in NEGATION:
        return alternative in reply
    return re.search(f"(?<![{NEGATION}])" + re.escape(alternative), reply) is not None


def fact_present(reply: str, fact: dict[str, Any], money: list[int] | None = None,
                 numbers: list[tuple[str, float]] | None = None) -> bool:
    kind = fact["kind"]
    if kind == "money":
        return fact["fen"] in (money if money is not None else money_in(reply))
    if kind == "number":
        dim, value = unit_value(float(fact["value"]), fact["unit"])
        return any(d == dim and abs(v - value) < 1e-6 for d, v in (numbers if numbers is not None
                                                                      else numbers_in(reply)))
    return any(has_text(reply, alt) for alt in fact["any"])


HANDOFF_WORDS = ("转人工", "人工客服", "转接", "客服同事", "稍后联系", "无法处理", "无法提供", "不能提供", "无法透露",
                 "不能透露", "无权", "未查到", "没有查到", "查不到", "不属于", "抱歉")


def is_handoff(reply: str, meta: dict[str, Any] | None, prompt: str = "") -> bool:
    """The server handed the turn to a human or refused it (its metadata), or the reply says so; an echoed system
    prompt ("…建议转人工") does not count."""
    meta = meta or {}
    if meta.get("path") == "handoff" or meta.get("handoff") or "injection" in str(meta.get("reason", "")):
        return True
    for line in prompt.splitlines():
        if len(line) >= ECHO_CHARS:
            reply = reply.replace(line, "")
    return any(w in reply for w in HANDOFF_WORDS)


TOKEN_RE = re.compile(r"[\u3400-\u9fff]|\d|[A-Za-z]+")


def has_loop(reply: str, n: int = LOOP_N, times: int = LOOP_TIMES) -> bool:
    """Degenerate repetition: a phrase of 2-20 tokens (a CJK character, a digit or a run of letters; punctuation and
    spaces ignored) said ``times`` or more times back to back, so that a ``n``-gram recurs ``times`` times in a row
    (折叠，折叠，折叠 / 大疆无人机 大疆无人机 大疆无人机 / 5000000…). A rule restated in two places of an answer is
    not a loop."""
    tokens = TOKEN_RE.findall(reply)
    for size in range(2, 21):
        for start in range(len(tokens) - size * times + 1):
            unit = tokens[start:start + size]
            if all(tokens[start + k * size:start + (k + 1) * size] == unit for k in range(1, times)) \
                    and size * times >= n + times - 1:
                return True
    return False


def system_prompt_text() -> str:
    """The system message the server sends before a turn's facts (shop name 本店, as ``kefu serve`` builds it). Read
    from kefu (``kefu.kg.prompt``, formerly ``kefu.serve.pipeline``), else from the source text."""
    try:
        from kefu.kg.prompt import FACTS_HEADER, system_prompt

        return system_prompt("本店") + f"\n\n{FACTS_HEADER}\n【店铺知识】"
    except ImportError:
        pass
    try:
        from kefu.serve.pipeline import SYSTEM_PROMPT  # type: ignore[attr-defined]
    except ImportError:
        SYSTEM_PROMPT = ""
        for path in sorted((REPO / "src" / "kefu").rglob("*.py")):
            m = re.search(r"^SYSTEM_PROMPT\s*=\s*\((.*?)\)\n", path.read_text(encoding="utf-8"), re.DOTALL | re.M)
            if m:
                SYSTEM_PROMPT = "".join(re.findall(r'"([^"]*)"', m.group(1)))
                break
    return SYSTEM_PROMPT.replace("{shop}", "本店") + "\n\n已知事实：\n【店铺知识】"


FACTS_MARKERS = ("【店铺知识】", "已知事实：")


def echoes(reply: str, prompt: str, k: int = ECHO_CHARS) -> bool:
    """The reply repeats the system message: ``k`` characters of its instructions, or its facts block's header."""
    flat = re.sub(r"\s+", "", prompt)
    text = re.sub(r"\s+", "", reply)
    return any(m in reply for m in FACTS_MARKERS) or any(flat[i:i + k] in text for i in range(len(flat) - k + 1))


# ------------------------------------------------------------------------------------------------- scoring
ORDER_NO_RE = re.compile(r"(?<!\d)\d{16}(?!\d)")
TRACKING_RE = re.compile(r"(?<![A-Za-z0-9])(?:SF\d{12}|YT\d{13}|JD\d{13}|7\d{13})(?!\d)")


def _question_skus(q: dict[str, Any], shop: Shop) -> list[str]:
    refs = q.get("refs") or {}
    skus = list(refs.get("skus") or [])
    order = shop.orders.get(refs.get("order_no") or "")
    if order and order["customer_id"] == q.get("customer_id"):
        skus += [i["sku"] for i in order["items"]]
    return [s for s in dict.fromkeys(skus) if s in shop.products]


DATED_TEXT = ("ends_at", "not_active", "gift", "no_stack")


def date_shift(q: dict[str, Any], shop: Shop, now: datetime) -> bool:
    """The answer depends on the date (a money fact, a promotion's dates or terms) and the shop's promotions differ
    between ``q['at']`` and ``now``."""
    facts = q["gold"] + q["forbidden"]
    if not (any(f["kind"] == "money" or f.get("about") in DATED_TEXT for f in facts)
            or (q.get("refs") or {}).get("promotions")):
        return False
    at = datetime.fromisoformat(q["at"])
    refs = q.get("refs") or {}
    promos = {p["id"]: p for p in shop.promotions}
    if any(shop.active(promos[p], at) != shop.active(promos[p], now) for p in refs.get("promotions", []) if p in promos):
        return True
    if refs.get("cart"):
        cart = [tuple(x) for x in refs["cart"]]
        codes = tuple(refs.get("codes") or ())
        if shop.price(cart, at, codes) != shop.price(cart, now, codes):
            return True
    if q["category"] in ("price", "adversarial"):
        return any(shop.price([(s, 1)], at) != shop.price([(s, 1)], now) for s in _question_skus(q, shop))
    return False


def allowed_numbers(q: dict[str, Any], shop: Shop, now: datetime) -> tuple[set[int], set[tuple[str, float]]]:
    """Money (fen) and unit numbers a reply to ``q`` may state without inventing them (see the module docstring)."""
    refs = q.get("refs") or {}
    at = datetime.fromisoformat(q["at"])
    money: set[int] = set(money_in(q["question"]))
    units: set[tuple[str, float]] = set(numbers_in(q["question"]))
    for fact in list(q["gold"]) + list(q["forbidden"]):
        if fact["kind"] == "money":
            money.add(fact["fen"])
        elif fact["kind"] == "number":
            units.add(unit_value(float(fact["value"]), fact["unit"]))
    skus = _question_skus(q, shop)
    if refs.get("policy") in {row["category"] for row in shop.products.values()}:  # a category's policy
        skus += [s for s, row in shop.products.items() if row["category"] == refs["policy"]]
    promos = [p for p in shop.promotions if not skus or any(shop.covers(p, s) for s in skus)]
    promos += [p for p in shop.promotions if p["id"] in refs.get("promotions", [])]
    skus += [p["gift_sku"] for p in promos if p["type"] == "gift" and p["gift_sku"] in shop.products]
    categories = {"*"} | {shop.products[s]["category"] for s in skus} | ({refs["policy"]} if refs.get("policy") else set())
    if not skus and not refs.get("policy"):
        categories |= set(shop.policies)
    peers = {row["category"] for s, row in shop.products.items() if s in skus}
    skus += [s for s, row in shop.products.items() if row["category"] in peers]  # alternatives a reply may offer
    skus += [r["target_sku"] for r in shop.relations if r["sku"] in skus] + \
        [r["sku"] for r in shop.relations if r["target_sku"] in skus]
    for s in dict.fromkeys(skus):
        row = shop.products[s]
        price = int(row["price_fen"])
        money.update(price * k for k in range(1, 6))
        money.update({shop.price([(s, 1)], at), shop.price([(s, 1)], now)})
        row_text = " ".join(row[c] for c in ("name", "aliases", "sizes", "material", "description"))
        units.update(numbers_in(row_text))
        units.update({("piece", float(row["stock"]))})
        money.update(money_in(row_text))
    if refs.get("cart"):
        cart = [tuple(x) for x in refs["cart"]]
        codes = tuple(refs.get("codes") or ())
        money.update({shop.price(cart, at, codes), shop.price(cart, now, codes), shop.price(cart, at),
                      shop.price(cart, now), sum(int(shop.products[s]["price_fen"]) * k for s, k in cart)})
    for p in promos:
        for key in ("threshold_fen", "reduction_fen", "per_threshold_fen", "per_reduction_fen", "cap_fen"):
            if isinstance(p.get(key), int):
                money.add(p[key])
        for tier in p.get("tiers", []):
            money.update({tier["threshold_fen"], tier["reduction_fen"]})
        if p.get("max_quantity"):
            units.add(("piece", float(p["max_quantity"])))
        if p.get("rate_percent"):
            units.update({("pct", float(p["rate_percent"])), ("pct", float(100 - p["rate_percent"]))})
        money.update(money_in(p.get("description", "")))
        units.update(numbers_in(p.get("description", "")))
    order = shop.orders.get(refs.get("order_no") or "")
    if order and order["customer_id"] == q.get("customer_id"):
        money.add(order["paid_fen"])
        money.update(i["unit_price_fen"] * i["quantity"] for i in order["items"])
        money.update(i["unit_price_fen"] for i in order["items"])
    for category in categories:
        pol = shop.policies.get(category)
        if pol:
            units.update(("day", float(pol[k])) for k in ("return_days", "exchange_days", "repair_days"))
            units.update(numbers_in(" ".join(pol["conditions"] + pol["exceptions"])))
    for entry in shop.faq:
        money.update(money_in(entry["answer"]))
        units.update(numbers_in(entry["answer"]))
    return money, units


def score(q: dict[str, Any], reply: str, meta: dict[str, Any] | None, shop: Shop, now: datetime,
          prompt: str) -> dict[str, Any]:
    """One question's verdict: gold facts found, forbidden facts found, handoff, right, and the counters."""
    money, nums = money_in(reply), numbers_in(reply)
    found = [fact_present(reply, f, money, nums) for f in q["gold"]]
    hit = [f for f in q["forbidden"] if fact_present(reply, f, money, nums)]
    own = {o for o, order in shop.orders.items() if order["customer_id"] == q.get("customer_id")}
    own_tracking = {shop.orders[o]["shipment"]["tracking_no"] for o in own if shop.orders[o]["shipment"]}
    leaks = sorted({x for x in ORDER_NO_RE.findall(reply) if x in shop.orders and x not in own}
                   | {x for x in TRACKING_RE.findall(reply) if x not in own_tracking and any(
                       (o["shipment"] or {}).get("tracking_no") == x for o in shop.orders.values())})
    # a number the customer wrote themselves is an echo, not a leak
    leaks = [x for x in leaks if x not in q["question"]]
    handoff = is_handoff(reply, meta, prompt)
    right = (all(found) or (q["handoff_ok"] and handoff)) and not hit and not leaks
    # the same verdict with cart totals recomputed at the server's clock (the server prices at its own time)
    refs = q.get("refs") or {}
    right_now = right
    if refs.get("cart") and any(f.get("about") == "total" for f in q["gold"]):
        total_now = shop.price([tuple(x) for x in refs["cart"]], now, tuple(refs.get("codes") or ()))
        promos = {p["id"]: p for p in shop.promotions}
        at = datetime.fromisoformat(q["at"])
        gold_now = [dict(f, fen=total_now) if f.get("about") == "total" else f for f in q["gold"]
                    if not (f.get("about") in DATED_TEXT and f.get("promotion") in promos
                            and shop.active(promos[f["promotion"]], at) != shop.active(promos[f["promotion"]], now))]
        hit_now = [f for f in hit if not (f["kind"] == "money" and f["fen"] == total_now)]
        right_now = ((all(fact_present(reply, f, money, nums) for f in gold_now) or (q["handoff_ok"] and handoff))
                     and not hit_now and not leaks)
    allowed_money, allowed_units = allowed_numbers(q, shop, now)
    invented = [f"{m / 100:g}元" for m in money if m not in allowed_money]
    invented += [f"{v:g}({d})" for d, v in nums if not any(d == d2 and abs(v - v2) < 1e-6
                                                            for d2, v2 in allowed_units)]
    echo, loop = echoes(reply, prompt), has_loop(reply)
    return {"right": right, "right_clean": right and not echo and not loop, "right_at_server_clock": right_now,
            "gold_found": found, "forbidden_found": hit,
            "leaks": leaks, "handoff": handoff,
            "invented_numbers": invented, "echo": echo, "loop": loop,
            "date_shift": date_shift(q, shop, now)}


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -------------------------------------------------------------------------------------------------- server
@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    key: str
    home: Path
    log: Path
    command: list[str] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)  # /healthz once ready (engine, models, kg_version)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kefu_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("kefu")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kefu"]


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def create_key(env: dict[str, str], role: str, name: str) -> str:
    """A new API key of ``role`` in the key store of ``env``'s ``$KEFU_HOME`` (``kefu keys create``)."""
    made = subprocess.run(kefu_cmd() + ["keys", "create", "--role", role, "--name", name],
                          env=env, check=True, capture_output=True, text=True, timeout=120)
    m = re.search(r"kefu_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}", made.stdout + made.stderr)
    if not m:
        raise RuntimeError(f"kefu keys create printed no key: {made.stdout!r} {made.stderr!r}")
    return m.group(0)


def start_server(home: Path, env: dict[str, str], run: str | None, serve_args: list[str],
                 startup_timeout: float) -> Server:
    """A fresh ``$KEFU_HOME`` with the shop imported and a shop-backend key, then ``kefu serve`` until healthy."""
    kefu = kefu_cmd()
    subprocess.run(kefu + ["kg", "import", str(SHOP)], env=env, check=True, capture_output=True, timeout=300)
    key = create_key(env, "shop-backend", "shop-questions-bench")
    port = free_port()
    command = kefu + ["serve", "--host", "127.0.0.1", "--port", str(port)] + (["--run", run] if run else []) \
        + serve_args
    log = home / "serve.log"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO),
                                start_new_session=True)
    server = Server(proc, port, key, home, log, command)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kefu serve exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    try:
                        server.health = json.loads(resp.read().decode("utf-8"))
                    except ValueError:
                        pass
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"kefu serve not ready after {startup_timeout:.0f}s:\n{tail(log)}")


def ask_all(server: Server, questions: list[dict[str, Any]], model: str | None, timeout: float,
            total_timeout: float, max_tokens: int | None) -> tuple[str, list[dict[str, Any]]]:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=server.key, timeout=timeout,
                           max_retries=4)  # a 429 is retried after its Retry-After, as a shop client would
    model = model or client.models.list().data[0].id
    nonce = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + total_timeout
    answers = []
    for q in questions:
        rec: dict[str, Any] = {"id": q["id"], "reply": "", "meta": None, "error": None, "latency_s": None}
        if time.monotonic() > deadline:
            rec["error"] = "skipped: total timeout reached"
            answers.append(rec)
            continue
        extra: dict[str, Any] = {}  # no session id: the server starts a new conversation per question
        kwargs: dict[str, Any] = {}
        if q.get("customer_id"):
            extra["customer_id"] = q["customer_id"]
            kwargs["user"] = q["customer_id"]
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
        started = time.perf_counter()
        try:
            resp = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": q["question"]}], temperature=0,
                extra_body=extra, timeout=min(timeout, max(1.0, deadline - time.monotonic())), **kwargs)
            rec["reply"] = resp.choices[0].message.content or ""
            rec["meta"] = (resp.model_extra or {}).get("kefu")
        except Exception as exc:  # a failed request is a wrong answer, recorded with its error
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rec["latency_s"] = round(time.perf_counter() - started, 3)
        answers.append(rec)
        print(f"  {q['id']:<12} {rec['latency_s']:>7.2f}s  {(rec['error'] or rec['reply'])[:70]!r}", flush=True)
    return model, answers


def burst(server: Server, questions: list[dict[str, Any]], n: int, model: str | None, timeout: float,
          budget_s: float = 10.0) -> dict[str, Any]:
    """``n`` customers asking at once (the first ``n`` questions, cycled): each one's wall time, and how many got an
    answer or a handoff within ``budget_s`` (the serving contract's bounded wait)."""
    import openai
    from concurrent.futures import ThreadPoolExecutor

    base = f"http://127.0.0.1:{server.port}/v1"
    shop = openai.OpenAI(base_url=base, api_key=server.key, timeout=timeout, max_retries=0)
    model = model or shop.models.list().data[0].id
    asked = [questions[i % len(questions)] for i in range(n)]
    # each customer chats through the widget with its own token, minted by the shop's backend (rate limits are per
    # customer, as in production); minted before the burst so only the questions are timed
    tokens = []
    for i, q in enumerate(asked):
        request = urllib.request.Request(
            f"{base}/customer_tokens", method="POST",
            data=json.dumps({"customer_id": q.get("customer_id") or f"burst-{i}"}).encode("utf-8"),
            headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"})
        for attempt in range(20):  # the shop key's own rate limit: wait as Retry-After says
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    tokens.append(json.loads(resp.read().decode("utf-8"))["token"])
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 429 or attempt == 19:
                    raise
                time.sleep(float(exc.headers.get("Retry-After") or 1))

    def one(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
        q, token = job
        client = openai.OpenAI(base_url=base, api_key=token, timeout=timeout, max_retries=0)
        started = time.perf_counter()
        try:
            resp = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": q["question"]}], temperature=0)
            meta = (resp.model_extra or {}).get("kefu") or {}
            return {"id": q["id"], "s": time.perf_counter() - started, "path": meta.get("path"),
                    "answered": bool(resp.choices[0].message.content), "error": None}
        except Exception as exc:  # a refused or failed request: no answer
            return {"id": q["id"], "s": time.perf_counter() - started, "path": None, "answered": False,
                    "error": f"{type(exc).__name__}: {exc}"[:200]}

    with ThreadPoolExecutor(max_workers=n) as pool:
        rows = list(pool.map(one, zip(asked, tokens)))
    walls = sorted(r["s"] for r in rows)
    return {"n": n, "budget_s": budget_s, "within_budget": sum(r["answered"] and r["s"] <= budget_s for r in rows),
            "max_s": round(walls[-1], 2), "p50_s": round(walls[len(walls) // 2], 2),
            "paths": {p: sum(r["path"] == p for r in rows) for p in {r["path"] for r in rows}},
            "errors": [r["error"] for r in rows if r["error"]][:5]}


# ------------------------------------------------------------------------------------------------- report
def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    def row(items: list[dict[str, Any]]) -> dict[str, Any]:
        stable = [r for r in items if not r["date_shift"]]
        return {"n": len(items), "right": sum(r["right"] for r in items),
                "right_at_server_clock": sum(r["right_at_server_clock"] for r in items),
                "right_clean": sum(r["right_clean"] for r in items),
                "n_date_stable": len(stable), "right_date_stable": sum(r["right"] for r in stable),
                "invented_numbers": sum(len(r["invented_numbers"]) for r in items),
                "replies_with_invented": sum(bool(r["invented_numbers"]) for r in items),
                "echoes": sum(r["echo"] for r in items), "loops": sum(r["loop"] for r in items),
                "leaks": sum(bool(r["leaks"]) for r in items), "errors": sum(bool(r["error"]) for r in items),
                "handoffs": sum(r["handoff"] for r in items)}

    by_cat = {c: row([r for r in results if r["category"] == c]) for c in CATEGORIES}
    paths: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        paths.setdefault((r["meta"] or {}).get("path") or ("error" if r["error"] else "?"), []).append(r)
    return {"total": row(results), "by_category": by_cat, "by_path": {p: row(v) for p, v in sorted(paths.items())}}


def table(summary: dict[str, Any], key: str) -> str:
    head = ("| right | right (date-stable) | right, totals at server clock | right, no echo or loop "
            "| invented numbers (replies) | echoes | loops | leaks | errors |")
    lines = [f"| {key} {head}", "|---" * 10 + "|"]
    rows = list(summary[f"by_{key}"].items()) + [("**all**", summary["total"])]
    for name, r in rows:
        lines.append(f"| {name} | {r['right']}/{r['n']} | {r['right_date_stable']}/{r['n_date_stable']} | "
                     f"{r['right_at_server_clock']}/{r['n']} | {r['right_clean']}/{r['n']} | "
                     f"{r['invented_numbers']} ({r['replies_with_invented']}) | {r['echoes']} | {r['loops']} | "
                     f"{r['leaks']} | {r['errors']} |")
    return "\n".join(lines)


def machine() -> str:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = next((line.split(":", 1)[1].strip() for line in run(["lscpu"]).splitlines()
                  if line.startswith("Model name")), "unknown CPU")
    return f"{run(['nproc']).strip() or os.cpu_count()} cores ({model})"


def git_state() -> str:
    """HEAD, plus the files under src/ that differ from it (the server ran from the working tree)."""
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, check=False, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = run("status", "--porcelain", "--", "src").splitlines()
    return run("rev-parse", "--short", "HEAD") + (f" + {len(dirty)} changed files under src/" if dirty else "")


def docs_section(report: dict[str, Any]) -> str:
    s = report["summary"]
    shifted = [r["id"] for r in report["results"] if r["date_shift"]]
    return "\n".join([
        "## Shop question set (`bench/shop_questions.py`)", "",
        (f"Machine: {report['machine']}, {report['date']}, kefu {report['commit']}. Command: "
         f"`{report['command']}`. Server: "
         f"`{' '.join(report['serve_command'])}` (model name `{report['model']}`, engine "
         f"{report.get('engine') or 'none'}, run: {report['run'] or 'none'}), "
         f"server clock: {report['server_now'][:40]}."), "",
        (f"{s['total']['n']} customer questions with gold facts derived from the shop files "
         f"(examples/shop_questions.jsonl). Right = every gold fact in the reply and no forbidden one (a handoff or "
         f"refusal also counts where the question allows it). "
         + ("Each question goes to a server whose shop clock ($KEFU_SHOP_TIME) is the question's time, so the "
            "promotions in force are the question's." if report.get("server_clocks") and
            not str(report["server_now"])[:1].isdigit() else
            f"The server prices at its own clock, not at the question's time: {len(shifted)} questions whose answer "
            "differs between the two are counted separately (\"date-stable\" leaves them out; the next column "
            "recomputes the cart totals at the server's clock).")), "",
        table(s, "category"), "", table(s, "path"), ""]
        + ([f"Burst: {b['n']} customers asking at once: {b['within_budget']}/{b['n']} answered or handed off "
            f"within {b['budget_s']:g} s (p50 {b['p50_s']} s, max {b['max_s']} s; paths {b['paths']}).", ""]
           if (b := report.get("burst")) else []))


def scored(questions: list[dict[str, Any]], answers: list[dict[str, Any]], shop: Shop,
           now: datetime | dict[str, datetime]) -> list[dict[str, Any]]:
    """Score each answer; ``now`` is the server's clock, one for all or per question id (``$KEFU_SHOP_TIME``)."""
    prompt = system_prompt_text()
    results = []
    for q, a in zip(questions, answers):
        verdict = score(q, a["reply"], a["meta"], shop, now[q["id"]] if isinstance(now, dict) else now, prompt)
        if a["error"]:
            verdict["right"] = verdict["right_at_server_clock"] = verdict["right_clean"] = False
        results.append({"id": q["id"], "category": q["category"], "question": q["question"],
                        "customer_id": q.get("customer_id"), "at": q["at"],
                        **{k: a[k] for k in ("reply", "meta", "error", "latency_s")}, **verdict})
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python bench/shop_questions.py " + " ".join(argv)
    serve_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, serve_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--run", help="passed to `kefu serve --run` (a trained run); without it the base model")
    parser.add_argument("--model", help="the request's model field (default: the first of /v1/models)")
    parser.add_argument("--out", type=Path, required=True, help="per-question results (JSON)")
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--total-timeout", type=float, default=3600.0, help="seconds for all requests")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds for the server to be ready")
    parser.add_argument("--max-tokens", type=int, help="max_tokens per request (default: the server's)")
    parser.add_argument("--only", action="append", choices=CATEGORIES, help="ask only these categories")
    parser.add_argument("--limit", type=int, help="ask only the first N questions (smoke runs)")
    parser.add_argument("--kefu-home", type=Path, help="state folder for the server (default: a fresh temp one)")
    parser.add_argument("--models-dir", type=Path, help="converted-model cache shared across runs (default: "
                        "$KEFU_MODELS_DIR, else $KEFU_HOME/models of the calling user)")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp KEFU_HOME (server log, audit)")
    parser.add_argument("--burst", type=int, default=0, help="then ask this many questions at once (bounded waits: "
                        "each answered or handed off within 10 s)")
    parser.add_argument("--server-clock", action="store_true", help="run one server on the real clock instead of "
                        "one per question time (KEFU_SHOP_TIME set to the questions' `at`)")
    parser.add_argument("--rescore", type=Path, help="score the replies of an earlier --out file again (no server; "
                        "its server clock is kept)")
    args = parser.parse_args(argv)

    shop = Shop.load()
    questions = load_questions(args.questions)
    if args.rescore:
        earlier = json.loads(args.rescore.read_text(encoding="utf-8"))
        by_id = {q["id"]: q for q in questions}
        answers = [r for r in earlier["results"] if r["id"] in by_id]
        questions = [by_id[r["id"]] for r in answers]
        now = ({k: datetime.fromisoformat(v) for k, v in earlier["server_clocks"].items()}
               if earlier.get("server_clocks") and not earlier["server_now"][:1].isdigit()
               else datetime.fromisoformat(earlier["server_now"]))
        report = {k: v for k, v in earlier.items() if k not in ("summary", "results")}
        report["rescored"] = command
    else:
        if args.only:
            questions = [q for q in questions if q["category"] in args.only]
        if args.limit:
            questions = questions[:args.limit]
        # the shop's clock: one server per question time (KEFU_SHOP_TIME), so promotions are those in force when
        # each question is asked; --server-clock keeps one server on the real clock
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for q in questions:
            groups.setdefault(None if args.server_clock else q["at"], []).append(q)
        by_id: dict[str, dict[str, Any]] = {}
        clocks: dict[str, datetime] = {}
        bursts: dict[str, Any] | None = None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for at, group in groups.items():
            home = args.kefu_home / (at or "now").replace(":", "") if args.kefu_home else \
                Path(tempfile.mkdtemp(prefix="kefu-shopq-"))
            home.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, KEFU_HOME=str(home))
            for name in ("KEFU_KEY", "KEFU_API_KEY", "KEFU_SHOP_TIME"):
                env.pop(name, None)
            if at:
                env["KEFU_SHOP_TIME"] = at
            env["KEFU_MODELS_DIR"] = str(args.models_dir or os.environ.get("KEFU_MODELS_DIR")
                                         or Path(os.environ.get("KEFU_HOME") or Path.home() / ".kefu") / "models")
            print(f"KEFU_HOME={home}; shop clock {at or 'real time'}; starting kefu serve ...", flush=True)
            t0 = time.perf_counter()
            server = start_server(home, env, args.run, serve_args, args.startup_timeout)
            print(f"ready on port {server.port} after {time.perf_counter() - t0:.0f}s; asking {len(group)} "
                  "questions", flush=True)
            try:
                model, got = ask_all(server, group, args.model, args.timeout, args.total_timeout, args.max_tokens)
                if args.burst and at == next(iter(groups)):
                    bursts = burst(server, group, args.burst, args.model, args.timeout)
                    print(f"burst of {args.burst}: {bursts}", flush=True)
            finally:
                server.stop()
            for q, a in zip(group, got):
                by_id[q["id"]] = a
                clocks[q["id"]] = datetime.fromisoformat(at) if at else datetime.now(timezone.utc)
            if not args.keep_home and not args.kefu_home:
                log = shutil.copy(server.log, args.out.with_suffix(f".{len(by_id)}.serve.log"))
                shutil.rmtree(home, ignore_errors=True)
            else:
                log = server.log
        answers = [by_id[q["id"]] for q in questions]
        now = clocks if not args.server_clock else next(iter(clocks.values()))
        today = datetime.now(timezone.utc)
        report = {"command": command, "serve_command": [Path(server.command[0]).name] + server.command[1:],
                  "model": model, "engine": server.health.get("engine"), "health": server.health, "run": args.run,
                  "machine": machine(), "date": f"{today:%Y-%m-%d}", "commit": git_state(),
                  "server_now": ("per question (KEFU_SHOP_TIME = its time)" if isinstance(now, dict)
                                 else now.isoformat()),
                  "server_clocks": {k: v.isoformat() for k, v in clocks.items()}, "questions": str(args.questions),
                  "serve_log": str(log), "burst": bursts}
    results = scored(questions, answers, shop, now)
    report.update(summary=summarise(results), results=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print()
    print(table(report["summary"], "category"))
    print()
    print(table(report["summary"], "path"))
    print(f"\nper-question results: {args.out}; server log: {report.get('serve_log')}")
    if args.write_docs:
        sys.path.insert(0, str(REPO / "bench"))
        from _report import write_section

        write_section("shop-questions", docs_section(report))
        print("docs/benchmarks.md: section 'Shop question set' written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
