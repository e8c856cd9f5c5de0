"""The bundled sample shop (examples/shop): deterministic, complete, internally consistent."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from kefu.data.taxonomy import INTENTS

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
FILES = ["products.csv", "relations.csv", "promotions.json", "policies.json", "playbooks.json", "orders.json",
         "faq.json", "dialogues.jsonl", "dialogues.csv", "dialogues.txt", "dialogues_sharegpt.json",
         "dialogues_alpaca.json", "dataset_info.json"]
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("shop_generate", SHOP / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_generator()


@pytest.fixture(scope="module")
def dialogues() -> list[dict]:
    return [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def products() -> dict[str, dict]:
    with (SHOP / "products.csv").open(encoding="utf-8", newline="") as fh:
        return {row["sku"]: row for row in csv.DictReader(fh)}


def _json(name: str):
    return json.loads((SHOP / name).read_text(encoding="utf-8"))


def test_generator_is_deterministic_and_matches_committed_files(gen, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    gen.generate(a)
    gen.generate(b, seed=7)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between two runs"
        assert (a / name).read_bytes() == (SHOP / name).read_bytes(), (
            f"examples/shop/{name} is stale: run `python examples/shop/generate.py`")


def test_other_seed_gives_other_dialogues(gen, tmp_path):
    gen.generate(tmp_path, seed=8)
    assert (tmp_path / "dialogues.jsonl").read_bytes() != (SHOP / "dialogues.jsonl").read_bytes()


def test_files_exist_and_are_small():
    for name in FILES:
        size = (SHOP / name).stat().st_size
        assert 0 < size < 1_500_000, f"{name}: {size} bytes"


def test_catalogue(products):
    assert len(products) >= 50
    cats = {"冲锋衣", "羽绒服", "抓绒衣", "速干T恤", "徒步鞋", "登山鞋", "双肩包", "帐篷", "睡袋", "登山杖", "保温杯", "帽子",
            "手套", "袜子"}
    for sku, row in products.items():
        assert re.fullmatch(r"SL-\d{5}", sku), sku
        assert row["category"] in cats, row
        assert int(row["price_fen"]) > 0 and int(row["stock"]) >= 0
    assert any("那件蓝色冲锋衣" in row["aliases"].split("|") for row in products.values())
    with (SHOP / "relations.csv").open(encoding="utf-8", newline="") as fh:
        rels = list(csv.DictReader(fh))
    assert rels
    for r in rels:
        assert r["sku"] in products and r["target_sku"] in products, r
        assert r["relation"] in {"compatible-with", "alternative-to", "accessory-of"}


def test_promotions_reference_real_items(products):
    promos = _json("promotions.json")
    cats = {row["category"] for row in products.values()}
    types = {p["type"] for p in promos}
    assert {"full_reduction", "per_full_reduction", "discount", "gift", "coupon"} <= types
    assert any(p["exclusive"] for p in promos)
    for p in promos:
        e = p["eligible"]
        assert e.get("all") or e.get("skus") or e.get("categories"), p["id"]
        assert set(e.get("skus", [])) <= set(products), p["id"]
        assert set(e.get("categories", [])) <= cats, p["id"]
        if p["type"] == "gift":
            assert p["gift_sku"] in products
        assert p["starts_at"] < p["ends_at"] and p["starts_at"].endswith("+08:00")


def test_orders(products):
    orders = _json("orders.json")
    assert len(orders) >= 40
    statuses = {"待付款", "待发货", "已发货", "已签收", "已完成", "已取消", "退款中"}
    assert {o["status"] for o in orders} == statuses
    assert len({o["order_no"] for o in orders}) == len(orders)
    for o in orders:
        assert re.fullmatch(r"\d{16}", o["order_no"]), o["order_no"]
        assert o["status"] in statuses
        for it in o["items"]:
            assert it["sku"] in products, (o["order_no"], it)
            assert it["quantity"] >= 1
        sh = o["shipment"]
        if sh:
            assert re.fullmatch(r"SF\d{12}|YT\d{13}|JD\d{13}|7\d{13}", sh["tracking_no"]), sh["tracking_no"]
            times = [e["time"] for e in sh["events"]]
            assert times == sorted(times)
        if o["status"] in ("待付款", "待发货", "已取消"):
            assert sh is None


def test_policies_playbooks_faq(products):
    pol = {p["category"] for p in _json("policies.json")}
    assert "*" in pol and {row["category"] for row in products.values()} <= pol
    assert {p["type"] for p in _json("playbooks.json")} == {"delay", "lost", "damaged", "address_change", "refused"}
    faq = _json("faq.json")
    assert len(faq) >= 30 and all(f["intent"] in INTENTS for f in faq)


def test_dialogue_counts_and_intents(dialogues):
    assert len(dialogues) >= 400
    assert len({d["id"] for d in dialogues}) == len(dialogues)
    assert {d["meta"]["intent"] for d in dialogues} == set(INTENTS)
    clean = [d for d in dialogues if d["meta"]["variant"] == "clean"]
    assert all(3 <= len(d["messages"]) <= 10 for d in clean)
    assert all(any(m["role"] == "assistant" for m in d["messages"]) for d in clean)
    variants = {d["meta"]["variant"] for d in dialogues}
    assert variants == {"clean", "exact_duplicate", "near_duplicate", "dirty"}
    by_id = {d["id"]: d for d in dialogues}
    for d in dialogues:
        if d["meta"]["variant"] == "exact_duplicate":
            assert by_id[d["meta"]["duplicate_of"]]["messages"] == d["messages"]
        if d["meta"]["variant"] == "near_duplicate":
            assert by_id[d["meta"]["duplicate_of"]]["messages"] != d["messages"]


def _txt_dialogues() -> list[list[str]]:
    blocks, cur = [], []
    for line in (SHOP / "dialogues.txt").read_text(encoding="utf-8").split("\n"):
        if line == "":
            if cur:
                blocks.append(cur)
            cur = []
        else:
            assert line.startswith(("顾客：", "客服：")), line
            cur.append(line)
    if cur:
        blocks.append(cur)
    return blocks


def test_every_format_holds_the_same_dialogues(dialogues):
    n = len(dialogues)
    with (SHOP / "dialogues.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["session_id"] for r in rows}) == n
    assert len(rows) == sum(len(d["messages"]) for d in dialogues)
    assert {r["speaker"] for r in rows} == {"顾客", "客服"}
    txt = _txt_dialogues()
    assert len(txt) == n
    assert [len(b) for b in txt] == [len(d["messages"]) for d in dialogues]
    share = _json("dialogues_sharegpt.json")
    assert len(share) == n
    assert [[t["value"] for t in s["conversations"]] for s in share] == [[m["content"] for m in d["messages"]]
                                                                           for d in dialogues]
    alpaca = _json("dialogues_alpaca.json")
    assert len(alpaca) == n
    for a, d in zip(alpaca, dialogues):
        joined = "\n".join(m["content"] for m in d["messages"])
        flat = "\n".join([x for pair in a["history"] for x in pair] + [a["instruction"], a["output"]])
        assert all(m["content"] in flat for m in d["messages"] if m["content"]), d["id"]
        assert len(flat) >= len(joined) - 10 * len(d["messages"])
    info = _json("dataset_info.json")
    assert {v["formatting"] for v in info.values()} == {"sharegpt", "alpaca"}
    for v in info.values():
        assert (SHOP / v["file_name"]).exists() and v["columns"]


def test_dirty_records_present(dialogues):
    kinds = {d["meta"].get("dirty") for d in dialogues if d["meta"]["variant"] == "dirty"}
    assert {"empty_turn", "null_turn", "no_agent_reply", "garbled_user"} <= kinds
    contents = [m["content"] for d in dialogues for m in d["messages"]]
    assert "" in contents and "NULL" in contents


def _id_ok(s: str) -> bool:
    return s[17].upper() == "10X98765432"[sum(int(c) * w for c, w in zip(s[:17], ID_WEIGHTS)) % 11]


def _luhn(s: str) -> bool:
    digits = [int(c) for c in s]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def test_raw_pii_is_valid(dialogues):
    text = "\n".join(m["content"] for d in dialogues for m in d["messages"])
    ids = re.findall(r"(?<![0-9A-Z])\d{17}[\dX](?![0-9A-Z])", text)
    assert len(ids) >= 10
    assert all(_id_ok(i) for i in ids), [i for i in ids if not _id_ok(i)]
    cards = [re.sub(r"\s", "", c) for c in re.findall(r"(?<!\d)62\d{2}(?:\s?\d{4}){3}(?:\s?\d{3})?(?!\d)", text)]
    assert len(cards) >= 10
    assert all(_luhn(c) for c in cards), [c for c in cards if not _luhn(c)]
    mobiles = re.findall(r"(?<!\d)1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)", text)
    assert len(mobiles) >= 50
    assert re.search(r"[\w.]+@(qq|163|126|gmail|outlook|sina|foxmail)\.com", text)
    assert re.search(r"0\d{2,3}-\d{7,8}", text)
    assert re.search(r"[省市].{1,6}[区县].{1,8}[路街道大].{0,3}\d+号.{2,8}\d+栋\d单元\d+室", text)
    # look-alikes that must survive cleaning are present too
    for needle in ["满300减50", "SL-1", "2026-11-11", "¥"]:
        assert needle in text, needle


def test_agent_answers_agree_with_knowledge(dialogues, products):
    orders = {o["order_no"]: o for o in _json("orders.json")}
    status_words = {"待付款": "待付款", "待发货": "待发货", "已发货": "已发货", "已签收": "已签收", "已完成": "已完成",
                    "已取消": "已取消", "退款中": "退款中"}
    checked = 0
    for d in dialogues:
        if d["meta"]["variant"] != "clean":
            continue
        refs = d["meta"].get("refs", {})
        agent = "\n".join(m["content"] for m in d["messages"] if m["role"] == "assistant")
        for sku in refs.get("skus", []):
            assert sku in products, (d["id"], sku)
        if d["meta"]["intent"] == "order_status":
            o = orders[refs["order_no"]]
            assert status_words[o["status"]] in agent, d["id"]
            checked += 1
        if "total_fen" in refs:
            fen = refs["total_fen"]
            said = f"{fen // 100}元" if fen % 100 == 0 else f"{fen // 100}.{fen % 100:02d}元"
            assert f"实付{said}" in agent, (d["id"], said)
            checked += 1
    assert checked >= 40


def _shingles(d: dict) -> set[str]:
    text = "".join(m["content"] for m in d["messages"])
    return {text[i:i + 3] for i in range(len(text) - 2)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def test_duplicates_are_exactly_the_labelled_ones(dialogues):
    """Clean dialogues of one intent are never near-duplicates; the labelled near-duplicates are."""
    by_id = {d["id"]: d for d in dialogues}
    clean: dict[str, list[set[str]]] = {}
    for d in dialogues:
        if d["meta"]["variant"] == "clean":
            clean.setdefault(d["meta"]["intent"], []).append(_shingles(d))
    for intent, shs in clean.items():
        for i, a in enumerate(shs):
            for b in shs[i + 1:]:
                assert _jaccard(a, b) <= 0.8, intent
    near = [d for d in dialogues if d["meta"]["variant"] == "near_duplicate"]
    assert near
    for d in near:
        assert _jaccard(_shingles(d), _shingles(by_id[d["meta"]["duplicate_of"]])) > 0.8, d["id"]
    texts = [tuple(m["content"] for m in d["messages"]) for d in dialogues]
    exact = sum(1 for d in dialogues if d["meta"]["variant"] == "exact_duplicate")
    assert len(texts) - len(set(texts)) == exact


def _independent_total(cart: list[tuple[dict, int]], promos: list[dict], at: str, codes: list[str]) -> int:
    """SCHEMA.md's promotion rules, re-implemented from the JSON alone (not the generator's code).

    Every active promotion covering a cart item applies (coupons when their code is given); one per stack_group,
    the cheapest for the customer; an exclusive one alone. Order: discount -> (per-)full reduction -> coupon.
    """
    from datetime import datetime
    from itertools import product as combos

    when = datetime.fromisoformat(at)

    def covers(p, row):
        e = p["eligible"]
        return e.get("all") or row["sku"] in e.get("skus", []) or row["category"] in e.get("categories", [])

    live = [p for p in promos if datetime.fromisoformat(p["starts_at"]) <= when <= datetime.fromisoformat(p["ends_at"])
            and (p["type"] != "coupon" or p["code"] in codes) and any(covers(p, r) for r, _ in cart)]
    groups: dict[str, list[dict]] = {}
    for p in live:
        if not p["exclusive"]:
            groups.setdefault(p["stack_group"], []).append(p)
    options = [[p] for p in live if p["exclusive"]] + [list(c) for c in combos(*groups.values())]

    def total(option):
        lines = [int(r["price_fen"]) * q for r, q in cart]
        for p in (x for x in option if x["type"] == "discount"):
            budget = p.get("max_quantity") or 10 ** 9
            for i, (r, q) in enumerate(cart):
                if covers(p, r):
                    n, budget = min(q, budget), budget - min(q, budget)
                    lines[i] -= int(r["price_fen"]) * n * (100 - p["rate_percent"]) // 100 if n else 0
        off = 0
        for kind in (("full_reduction", "per_full_reduction"), ("coupon",)):
            for p in (x for x in option if x["type"] in kind):
                base = sum(v for (r, _), v in zip(cart, lines) if covers(p, r))
                if p["type"] == "full_reduction":
                    off += max([t["reduction_fen"] for t in p["tiers"] if base >= t["threshold_fen"]], default=0)
                elif p["type"] == "per_full_reduction":
                    off += min(base // p["per_threshold_fen"] * p["per_reduction_fen"], p.get("cap_fen") or 10 ** 12)
                elif base - off >= p["threshold_fen"]:
                    off += p["reduction_fen"]
        return max(0, sum(lines) - off)

    return min(total(o) for o in options)


def test_promotion_arithmetic_recomputed_from_knowledge_files(dialogues, products):
    promos = _json("promotions.json")
    checked = 0
    for d in dialogues:
        refs = d["meta"].get("refs", {})
        if "cart" not in refs:
            continue
        cart = [(products[sku], q) for sku, q in refs["cart"]]
        assert _independent_total(cart, promos, d["meta"]["date"], refs["codes"]) == refs["total_fen"], d["id"]
        checked += 1
    assert checked >= 30
