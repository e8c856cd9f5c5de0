"""The shop's judge set (examples/shop_questions.jsonl): well formed, and every gold fact recomputed from the shop
files by a small checker of its own (not kefu's promotion engine or knowledge graph, which the set judges).

The set lives next to examples/shop, not in it: ``kefu prepare examples/shop`` reads every data file of that folder
(the judge questions would become training input) and tests/data/test_shop_formats.py lists its inputs.

Also checks the bench's scorer (bench/shop_questions.py) on made-up replies: a reply stating the gold is right, one
stating a forbidden fact or another customer's tracking number is not.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from datetime import datetime, timedelta
from itertools import product as combos
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "examples" / "shop"
QUESTIONS = REPO / "examples" / "shop_questions.jsonl"
CATEGORIES = {"price": 12, "stock": 6, "attribute": 8, "policy": 6, "order": 8, "adversarial": 12}  # minimum counts
STATUS_WORDS = {"待付款", "待发货", "已发货", "已签收", "已完成", "已取消", "退款中"}


def _json(name: str):
    return json.loads((SHOP / name).read_text(encoding="utf-8"))


with (SHOP / "products.csv").open(encoding="utf-8", newline="") as _fh:
    PRODUCTS = {row["sku"]: row for row in csv.DictReader(_fh)}
PROMOS = {p["id"]: p for p in _json("promotions.json")}
POLICIES = {p["category"]: p for p in _json("policies.json")}
ORDERS = {o["order_no"]: o for o in _json("orders.json")}
FAQ = _json("faq.json")
QS = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------- the checker: SCHEMA.md's rules, read here
def _covers(p: dict, sku: str) -> bool:
    e = p["eligible"]
    return bool(e.get("all") or sku in e.get("skus", []) or PRODUCTS[sku]["category"] in e.get("categories", []))


def _active(p: dict, at: str) -> bool:
    return datetime.fromisoformat(p["starts_at"]) <= datetime.fromisoformat(at) <= datetime.fromisoformat(p["ends_at"])


def _apply(cart: list[tuple[str, int]], option: list[dict]) -> int:
    """One set of promotions on a cart: discounts (rounded down, max_quantity), then (per-)full reductions on the
    discounted eligible amount, then coupons on what is left."""
    lines = [int(PRODUCTS[s]["price_fen"]) * q for s, q in cart]
    for p in option:
        if p["type"] == "discount":
            left = p.get("max_quantity") or 10 ** 9
            for i, (s, q) in enumerate(cart):
                if _covers(p, s) and left:
                    n = min(q, left)
                    left -= n
                    lines[i] -= int(PRODUCTS[s]["price_fen"]) * n * (100 - p["rate_percent"]) // 100
    off = 0
    for p in option:
        base = sum(v for (s, _), v in zip(cart, lines) if _covers(p, s))
        if p["type"] == "full_reduction":
            off += max([t["reduction_fen"] for t in p["tiers"] if base >= t["threshold_fen"]], default=0)
        elif p["type"] == "per_full_reduction":
            off += min(base // p["per_threshold_fen"] * p["per_reduction_fen"], p.get("cap_fen") or 10 ** 12)
    for p in option:
        if p["type"] == "coupon" and sum(v for (s, _), v in zip(cart, lines) if _covers(p, s)) - off >= p["threshold_fen"]:
            off += p["reduction_fen"]
    return max(0, sum(lines) - off)


def _best(cart: list[tuple[str, int]], at: str, codes: list[str]) -> tuple[int, list[dict]]:
    live = [p for p in PROMOS.values() if _active(p, at) and (p["type"] != "coupon" or p["code"] in codes)
            and any(_covers(p, s) for s, _ in cart)]
    groups: dict[str, list[dict]] = {}
    for p in live:
        if not p["exclusive"]:
            groups.setdefault(p["stack_group"], []).append(p)
    options = [[p] for p in live if p["exclusive"]] + [list(c) for c in combos(*groups.values())]
    return min(((_apply(cart, o), o) for o in options), key=lambda x: x[0])


def _cart(q: dict) -> list[tuple[str, int]]:
    return [(s, n) for s, n in q["refs"]["cart"]]


def _row_text(sku: str) -> str:
    row = PRODUCTS[sku]
    return " ".join(row[c] for c in ("name", "aliases", "sizes", "material", "description"))


def _month_day(iso: str) -> tuple[int, int]:
    d = datetime.fromisoformat(iso)
    return d.month, d.day


# ---------------------------------------------------------------------------------------------- well formed
def test_the_set_is_well_formed():
    assert len(QS) >= 60
    ids = [q["id"] for q in QS]
    assert len(ids) == len(set(ids))
    counts = {c: sum(q["category"] == c for q in QS) for c in CATEGORIES}
    assert {q["category"] for q in QS} == set(CATEGORIES)
    assert all(counts[c] >= n for c, n in CATEGORIES.items()), counts
    customers = {o["customer_id"] for o in ORDERS.values()}
    for q in QS:
        assert set(q) >= {"id", "question", "customer_id", "at", "category", "gold", "forbidden", "handoff_ok",
                          "source"}, q["id"]
        assert q["question"].strip() and q["source"].strip(), q["id"]
        assert re.search(r"[\u4e00-\u9fff]", q["question"]), q["id"]
        at = datetime.fromisoformat(q["at"])
        assert at.utcoffset() == timedelta(hours=8), q["id"]
        assert q["customer_id"] is None or q["customer_id"] in customers, q["id"]
        assert isinstance(q["handoff_ok"], bool)
        assert q["gold"] or q["handoff_ok"], f"{q['id']}: gold may be empty only when a handoff is a right answer"
        for fact in q["gold"] + q["forbidden"]:
            assert fact["kind"] in ("money", "number", "text"), q["id"]
            if fact["kind"] == "money":
                assert isinstance(fact["fen"], int) and fact["fen"] >= 0, q["id"]
            elif fact["kind"] == "number":
                assert isinstance(fact["value"], (int, float)) and fact["unit"], q["id"]
            else:
                assert fact["any"] and all(isinstance(a, str) and a for a in fact["any"]), q["id"]
        if q["category"] == "order":
            assert q["customer_id"] and ORDERS[q["refs"]["order_no"]]["customer_id"] == q["customer_id"], q["id"]


def test_most_questions_share_one_time_inside_the_november_promotions():
    times = [q["at"] for q in QS]
    common = max(set(times), key=times.count)
    assert times.count(common) >= 0.8 * len(QS)
    assert _active(PROMOS["P001"], common) and _active(PROMOS["P010"], common)


# ------------------------------------------------------------------------------------- gold, recomputed
def _check_money(q: dict, fact: dict) -> None:
    about = fact["about"]
    if about == "total":
        total, used = _best(_cart(q), q["at"], q["refs"].get("codes", []))
        assert fact["fen"] == total, (q["id"], fact["fen"], total)
        assert sorted(p["id"] for p in used) == sorted(x for x in q["refs"]["promotions"] if x in {p["id"] for p in used})
    elif about == "paid":
        order = ORDERS[q["refs"]["order_no"]]
        assert order["customer_id"] == q["customer_id"] and fact["fen"] == order["paid_fen"], q["id"]
    elif about == "promo_amount":
        p = PROMOS[fact["promotion"]]
        amounts = {p.get(k) for k in ("threshold_fen", "reduction_fen", "per_threshold_fen", "per_reduction_fen",
                                       "cap_fen")} | {t["reduction_fen"] for t in p.get("tiers", [])}
        assert fact["fen"] in amounts and _active(p, q["at"]), q["id"]
    else:
        raise AssertionError(f"{q['id']}: unknown money fact {about}")


def _check_number(q: dict, fact: dict) -> None:
    about, value, unit = fact["about"], fact["value"], fact["unit"]
    if about == "attribute":
        said = f"{value:g}{unit}"
        assert any(said in _row_text(s) for s in q["refs"]["skus"]), (q["id"], said)
    elif about in ("return_days", "exchange_days", "repair_days"):
        assert unit == "天" and POLICIES[q["refs"]["policy"]][about] == value, q["id"]
    else:
        raise AssertionError(f"{q['id']}: unknown number fact {about}")


def _check_text(q: dict, fact: dict) -> None:
    about, alts = fact["about"], fact["any"]
    refs = q.get("refs", {})
    sku = (refs.get("skus") or [None])[0]
    order = ORDERS.get(refs.get("order_no", ""))
    if about in ("in_stock", "out_of_stock"):
        row = PRODUCTS[sku]
        assert (int(row["stock"]) > 0) == (about == "in_stock"), q["id"]
        assert ("有货" in alts) == (about == "in_stock") and ("缺货" in alts) == (about == "out_of_stock")
        if refs.get("color"):
            assert refs["color"] in row["colors"].split("|"), q["id"]
        if refs.get("size"):
            assert refs["size"] in row["sizes"].split("|"), q["id"]
    elif about == "colours":
        colours = PRODUCTS[sku]["colors"].split("|")
        assert set(alts) == set(colours) and not any(refs["color"] in c for c in colours), q["id"]
    elif about == "max_size":
        sizes = PRODUCTS[sku]["sizes"].split("|")
        top = max(sizes, key=int)
        assert refs["size"] not in sizes and all(top in a for a in alts), q["id"]
    elif about == "attribute":
        assert any(a in _row_text(s) for a in alts for s in refs["skus"]), q["id"]
    elif about == "condition":
        assert any(a in c for a in alts for c in POLICIES[refs["policy"]]["conditions"]), q["id"]
    elif about == "no_reason_exception":
        assert POLICIES[refs["policy"]]["exceptions"] and "不支持" in alts, q["id"]
    elif about == "shipping_paid_by":
        assert any(a in POLICIES[refs["policy"]]["shipping_paid_by"] for a in alts), q["id"]
    elif about == "status":
        assert order["customer_id"] == q["customer_id"] and order["status"] in alts, q["id"]
        assert not (set(alts) & (STATUS_WORDS - {order["status"]})), q["id"]
    elif about == "carrier":
        assert order["shipment"] and alts[0] in order["shipment"]["carrier"], q["id"]
    elif about == "tracking_no":
        assert order["customer_id"] == q["customer_id"] and alts == [order["shipment"]["tracking_no"]], q["id"]
    elif about == "latest_event":
        last = order["shipment"]["events"][-1]
        assert "异常" in last["status"] and order["status"] == "已发货", q["id"]
    elif about == "gift":
        p = PROMOS[fact["promotion"]]
        cart = _cart(q)
        assert _active(p, q["at"]) and any(_covers(p, s) for s, _ in cart), q["id"]
        _, used = _best(cart, q["at"], refs.get("codes", []))
        discounted = [p2 for p2 in used if p2["type"] == "discount"]
        base = _apply([(s, n) for s, n in cart if _covers(p, s)], discounted)
        assert base >= p["threshold_fen"], q["id"]
        gift = PRODUCTS[p["gift_sku"]]
        assert any(a in gift["name"] + gift["aliases"] for a in alts), q["id"]
    elif about == "no_stack":
        promos = [PROMOS[x] for x in fact["promotions"]]
        assert (len(promos) == 1 and promos[0]["exclusive"]) or len({p["stack_group"] for p in promos}) == 1, q["id"]
        assert all(_active(p, q["at"]) for p in promos), q["id"]
    elif about == "ends_at":
        month, day = _month_day(PROMOS[fact["promotion"]]["ends_at"])
        assert f"{month}月{day}日" in alts and _active(PROMOS[fact["promotion"]], q["at"]), q["id"]
    elif about == "not_active":
        p = PROMOS[fact["promotion"]]
        assert not _active(p, q["at"]), q["id"]
        if datetime.fromisoformat(p["starts_at"]) > datetime.fromisoformat(q["at"]):  # not started: its date is gold
            month, day = _month_day(p["starts_at"])
            assert f"{month}月{day}日" in alts, q["id"]
    elif about == "not_sold":
        item = fact["item"]
        assert not any(item in _row_text(s) or item in PRODUCTS[s]["brand"] or item in PRODUCTS[s]["category"]
                       for s in PRODUCTS), q["id"]
    elif about == "refusal":
        assert q["handoff_ok"], q["id"]
    else:
        raise AssertionError(f"{q['id']}: unknown text fact {about}")


@pytest.mark.parametrize("q", QS, ids=[q["id"] for q in QS])
def test_gold_recomputed_from_the_shop_files(q):
    for fact in q["gold"]:
        {"money": _check_money, "number": _check_number, "text": _check_text}[fact["kind"]](q, fact)
    if q["category"] == "price":
        assert any(f["kind"] == "money" or f["about"] == "ends_at" for f in q["gold"]), q["id"]
        for pid in q["refs"].get("promotions", []):
            assert _active(PROMOS[pid], q["at"]), (q["id"], pid)


@pytest.mark.parametrize("q", [q for q in QS if q["forbidden"]], ids=[q["id"] for q in QS if q["forbidden"]])
def test_forbidden_facts_are_really_wrong(q):
    gold_fen = {f["fen"] for f in q["gold"] if f["kind"] == "money"}
    own = {o["shipment"]["tracking_no"] for o in ORDERS.values() if o["shipment"]
           and o["customer_id"] == q["customer_id"]} | {n for n, o in ORDERS.items() if o["customer_id"] == q["customer_id"]}
    others = {o["shipment"]["tracking_no"] for o in ORDERS.values() if o["shipment"]} | set(ORDERS)
    for fact in q["forbidden"]:
        if fact["kind"] == "money":
            assert fact["fen"] not in gold_fen, q["id"]
            if fact["about"] == "total_with_inactive":
                named = [PROMOS[x] for x in fact["promotions"]]
                assert any(not _active(p, q["at"]) for p in named), q["id"]
                assert fact["fen"] == _apply(_cart(q), named), (q["id"], _apply(_cart(q), named))
        elif fact["about"] in ("other_customer_tracking", "other_customer_order_no"):
            for alt in fact["any"]:
                assert alt in others and alt not in own, (q["id"], alt)
        elif fact["about"] == "other_customer_items":
            owner = ORDERS[q["refs"]["order_no"]]
            assert owner["customer_id"] != q["customer_id"]
            names = [PRODUCTS[i["sku"]]["name"] for i in owner["items"]]
            assert any(alt in names for alt in fact["any"]), q["id"]


def test_other_customers_orders_are_theirs():
    for q in QS:
        owner = q.get("refs", {}).get("owner")
        if owner:
            assert ORDERS[q["refs"]["order_no"]]["customer_id"] == owner != q["customer_id"], q["id"]
            assert q["handoff_ok"] and q["category"] == "adversarial", q["id"]


# ------------------------------------------------------------------------------------- the bench's scorer
@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("shop_questions_bench", REPO / "bench" / "shop_questions.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _say(fact: dict) -> str:
    if fact["kind"] == "money":
        return f"¥{fact['fen'] // 100}.{fact['fen'] % 100:02d}"
    if fact["kind"] == "number":
        return f"{fact['value']:g}{fact['unit']}"
    return fact["any"][0]


def test_scorer_accepts_a_reply_with_the_gold_and_rejects_forbidden_facts(bench):
    shop = bench.Shop.load()
    now = datetime.fromisoformat("2026-11-27T10:00:00+08:00")
    prompt = bench.system_prompt_text()
    for q in QS:
        reply = "您好，" + "，".join(_say(f) for f in q["gold"]) + "。"
        verdict = bench.score(q, reply, None, shop, now, prompt)
        assert verdict["right"] and not verdict["loop"] and not verdict["echo"], (q["id"], reply, verdict)
        for fact in q["forbidden"]:
            bad = bench.score(q, reply + "另外" + _say(fact) + "。", None, shop, now, prompt)
            assert not bad["right"], (q["id"], fact)


def test_scorer_readers(bench):
    assert bench.money_in("到手¥1,557.20，原价599元，满300减50") == [155720, 59900, 30000, 5000]
    assert ("len", 10000) in bench.numbers_in("防水指数10000mm")
    assert ("mass", 1600) in bench.numbers_in("整帐约1.6公斤")
    assert ("temp", -15) in bench.numbers_in("舒适温度零下15度")
    assert ("day", 180) in bench.numbers_in("保修一百八十天")
    assert not bench.has_text("目前没有货", "有货") and bench.has_text("目前有货", "有货")
    assert bench.has_loop("好的好的好的好的好的好的") and bench.has_loop("碳纤维，折叠，折叠，折叠，折叠")
    assert bench.has_loop("500-50000000000000") and not bench.has_loop("X1冲锋衣防水指数10000mm。")
    restated = "已拆封的袜子不支持7天无理由退货。袜子支持7天无理由退货；例外：已拆封的袜子不支持7天无理由退货。"
    assert not bench.has_loop(restated)  # a rule said in two places is not a loop
    assert bench.echoes("我的设定是：" + bench.system_prompt_text()[:20], bench.system_prompt_text())
    q = next(q for q in QS if q["id"] == "adv-01")
    leak = bench.score(q, "抱歉，查不到。顺便说一下运单SF829657249208", None, bench.Shop.load(),
                       datetime.fromisoformat(q["at"]), "")
    assert leak["leaks"] and not leak["right"]
    ok = bench.score(q, "抱歉，没有查到该订单，请核对订单号。", {"path": "light"}, bench.Shop.load(),
                     datetime.fromisoformat(q["at"]), "")
    assert ok["right"] and not ok["leaks"]


def test_invented_numbers(bench):
    shop = bench.Shop.load()
    q = next(q for q in QS if q["id"] == "price-01")
    now = datetime.fromisoformat(q["at"])
    honest = bench.score(q, "原价¥1797.00，九折后满600减120，到手¥1557.20，防水指数10000mm。", None, shop, now, "")
    assert honest["right"] and honest["invented_numbers"] == []
    made_up = bench.score(q, "三件只要¥388，防水指数30000mm", None, shop, now, "")
    assert not made_up["right"] and sorted(made_up["invented_numbers"]) == ["30000(len)", "388元"]
