"""Knowledge-graph benchmark: fact retrieval on a 10,000-SKU catalogue and exact pricing of 20-item carts under 10
active promotions, each against a named baseline run in the same process.

* Retrieval: ``kefu.kg.retrieval.retrieve`` (precompiled trie regex over every name/alias, cached per version)
  vs the naive way — a per-turn SQL ``LIKE`` scan of the product table for names contained in the turn.
* Pricing: ``kefu.kg.promotions.price_cart`` (branch and bound over legal combinations) vs
  ``price_cart_bruteforce`` (all 2^n subsets of the promotions in force). Both must agree to the fen.

Targets (from the issue): retrieval p95 < 5 ms; pricing p95 < 5 ms. Run: ``.venv/bin/python bench/kg_bench.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

CST = timezone(timedelta(hours=8))
AT = datetime(2026, 11, 11, 10, 0, tzinfo=CST)
CATEGORIES = ["冲锋衣", "羽绒服", "抓绒衣", "速干T恤", "徒步鞋", "登山鞋", "双肩包", "帐篷", "睡袋", "登山杖", "保温杯",
              "帽子", "手套", "袜子"]
BRANDS = ["山岚", "北峰", "云径", "远山", "岩羊", "雪线", "风语", "林海", "苍穹", "石溪", "青岭", "白桦"]
SERIES = ["风行", "极光", "追风", "雪豹", "星河", "远征", "破晓", "流云", "赤焰", "青松", "秋叶", "晨曦", "暮色", "疾风",
          "飞岩", "寒川", "烈日", "霜降", "惊蛰", "谷雨"]
EDITIONS = ["经典款", "轻量款", "专业款", "旗舰款", "城市款", "Pro", "Max", "Lite", "二代", "三代", "女款", "男款",
            "童款", "加厚款", "联名款", "限定款", "复刻款", "升级款", "基础款", "探险款", "户外款", "礼盒款", "四季款",
            "冬季款", "夏季款", "春秋款", "防水款", "透气款", "高帮款", "低帮款", "中帮款", "宽楦款", "窄楦款", "长款",
            "短款", "修身款", "宽松款", "连帽款", "无帽款", "标准款", "精英款", "入门款"]
COLORS = ["黑色", "白色", "藏青", "曜石灰", "卡其色", "军绿", "酒红", "天蓝", "橙色", "米白"]
SIZES = ["S", "M", "L", "XL", "XXL"]
STYLES = ["城市通勤", "专业登山", "轻量徒步", "休闲"]


def synthesise(folder: Path, n_products: int, seed: int = 7) -> None:
    """A catalogue of ``n_products`` SKUs with aliases, 10 active promotions, policies, playbooks, orders, FAQ."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = set()
    with open(folder / "products.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "name", "aliases", "category", "brand", "price_fen", "stock", "colors", "sizes",
                         "material", "style", "description"])
        k = 0
        while k < n_products:
            brand, series, edition, category = (rng.choice(BRANDS), rng.choice(SERIES), rng.choice(EDITIONS),
                                                rng.choice(CATEGORIES))
            name = f"{brand}{series}{edition}{category}"
            if name in names:
                continue
            names.add(name)
            aliases = [f"{series}{edition}{category}", f"{brand}{series}{edition}"]
            writer.writerow([f"SL-{10000 + k:05d}", name, "|".join(aliases), category, brand,
                             rng.randrange(1900, 199900, 100), rng.randint(0, 300),
                             "|".join(rng.sample(COLORS, 3)), "|".join(rng.sample(SIZES, 3)), "聚酯纤维",
                             rng.choice(STYLES), f"{name}，{rng.choice(STYLES)}"])
            k += 1
    start, end = "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00"
    every = {"all": True, "skus": [], "categories": []}

    def cats(*names: str) -> dict:
        return {"all": False, "skus": [], "categories": list(names)}

    promotions = [
        {"id": "P01", "name": "跨店满减", "type": "full_reduction", "stack_group": "platform", "eligible": every,
         "tiers": [{"threshold_fen": 30000, "reduction_fen": 5000}, {"threshold_fen": 60000, "reduction_fen": 12000},
                   {"threshold_fen": 100000, "reduction_fen": 22000}]},
        {"id": "P02", "name": "店铺满减", "type": "full_reduction", "stack_group": "shop", "eligible": every,
         "tiers": [{"threshold_fen": 50000, "reduction_fen": 6000}, {"threshold_fen": 150000, "reduction_fen": 20000}]},
        {"id": "P03", "name": "鞋服每满200减20", "type": "per_full_reduction", "stack_group": "shop",
         "eligible": cats("冲锋衣", "羽绒服", "徒步鞋", "登山鞋"), "per_threshold_fen": 20000, "per_reduction_fen": 2000,
         "cap_fen": 30000},
        {"id": "P04", "name": "羽绒服八五折", "type": "discount", "stack_group": "item", "eligible": cats("羽绒服"),
         "rate_percent": 85},
        {"id": "P05", "name": "配件九折", "type": "discount", "stack_group": None,
         "eligible": cats("帽子", "手套", "袜子", "保温杯"), "rate_percent": 90},
        {"id": "P06", "name": "满499赠袜", "type": "gift", "stack_group": "gift", "eligible": every,
         "threshold_fen": 49900, "gift_sku": "SL-10000", "gift_quantity": 1},
        {"id": "P07", "name": "店铺券", "type": "coupon", "stack_group": "coupon", "eligible": every,
         "threshold_fen": 20000, "reduction_fen": 2000, "code": "SHOP20"},
        {"id": "P08", "name": "平台券", "type": "coupon", "stack_group": "platform_coupon", "eligible": every,
         "threshold_fen": 100000, "reduction_fen": 8000, "code": "PLAT80"},
        {"id": "P09", "name": "帐篷秒杀五折", "type": "discount", "exclusive": True, "eligible": cats("帐篷"),
         "rate_percent": 50, "max_quantity": 1},
        {"id": "P10", "name": "户外装备每满300减15", "type": "per_full_reduction", "stack_group": None,
         "eligible": cats("双肩包", "帐篷", "睡袋", "登山杖"), "per_threshold_fen": 30000, "per_reduction_fen": 1500},
    ]
    for p in promotions:
        p.update(starts_at=start, ends_at=end)
    (folder / "promotions.json").write_text(json.dumps(promotions, ensure_ascii=False), encoding="utf-8")
    policies = [{"category": c, "return_days": 7, "exchange_days": 15, "repair_days": 365 if c in ("冲锋衣", "羽绒服") else 0,
                 "seven_day_no_reason": c != "袜子", "conditions": ["吊牌完好"], "exceptions": [],
                 "shipping_paid_by": "买家"} for c in CATEGORIES] + [
        {"category": "*", "return_days": 7, "exchange_days": 15, "repair_days": 0, "seven_day_no_reason": True}]
    (folder / "policies.json").write_text(json.dumps(policies, ensure_ascii=False), encoding="utf-8")
    playbooks = [{"type": t, "steps": ["核实", "处理", "回访"], "allowed_promises": ["跟进处理"],
                  "forbidden_promises": ["保证时效"], "escalate_after_hours": 24}
                 for t in ("delay", "lost", "damaged", "address_change", "refused")]
    (folder / "playbooks.json").write_text(json.dumps(playbooks, ensure_ascii=False), encoding="utf-8")
    orders = []
    for k in range(2000):
        orders.append({"order_no": f"{2026110000000000 + k}", "customer_id": f"C{k % 500:04d}",
                       "created_at": "2026-11-05T10:00:00+08:00", "status": "已发货",
                       "items": [{"sku": f"SL-{10000 + rng.randrange(n_products):05d}", "quantity": 1,
                                  "unit_price_fen": 9900}], "paid_fen": 9900,
                       "shipment": {"carrier": "顺丰速运", "tracking_no": f"SF{1000000000000 + k}",
                                    "events": [{"time": "2026-11-06T10:00:00+08:00", "status": "运输中",
                                                "location": "杭州"}]}})
    (folder / "orders.json").write_text(json.dumps(orders, ensure_ascii=False), encoding="utf-8")
    faq = [{"question": q, "answer": a, "intent": "other"} for q, a in
           [("发什么快递", "默认顺丰"), ("可以开发票吗", "可以"), ("多久发货", "48小时内")]]
    (folder / "faq.json").write_text(json.dumps(faq, ensure_ascii=False), encoding="utf-8")


def turns(kg, n: int, seed: int = 11) -> list[tuple[str, str | None]]:
    """Sample customer turns: product questions by name and alias, colour/size, orders, policies, exceptions, FAQ."""
    rng = random.Random(seed)
    products = kg.products()
    out = []
    for k in range(n):
        p = rng.choice(products)
        kind = k % 8
        if kind == 0:
            out.append((f"{p.name}多少钱？有优惠吗", None))
        elif kind == 1:
            out.append((f"{p.aliases[0]}有{rng.choice(p.colors)}的{rng.choice(p.sizes)}码吗", None))
        elif kind == 2:
            out.append((f"你好，{p.aliases[1]}可以七天无理由退货吗", None))
        elif kind == 3:
            no = 2026110000000000 + rng.randrange(2000)
            out.append((f"我的订单{no}到哪了", f"C{(no - 2026110000000000) % 500:04d}"))
        elif kind == 4:
            out.append(("快递好几天没更新了，是不是丢件了", f"C{rng.randrange(500):04d}"))
        elif kind == 5:
            out.append(("可以开发票吗", None))
        elif kind == 6:
            out.append((f"请问{p.category}有什么推荐的吗，预算五百左右，想要{rng.choice(STYLES)}风格", None))
        else:
            out.append((f"这个{p.name}和{rng.choice(products).aliases[0]}哪个更适合冬天爬山", None))
    return out


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Samples(list):
    """Wall-clock milliseconds per call, with the calling thread's CPU milliseconds alongside in ``cpu``: on a shared
    machine the wall-clock tail includes time spent waiting for a core, the CPU time does not."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []


def timed(fn, args_list, repeat: int = 1) -> Samples:
    out = Samples()
    for _ in range(repeat):
        for args in args_list:
            c0, t0 = time.thread_time(), time.perf_counter()
            fn(*args)
            out.append((time.perf_counter() - t0) * 1000)
            out.cpu.append((time.thread_time() - c0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--carts", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kefu_kg_bench_"))
    os.environ["KEFU_HOME"] = str(work / "home")
    from sqlalchemy import text as sql

    from kefu.kg.promotions import CartItem, price_cart, price_cart_bruteforce
    from kefu.kg.retrieval import link, retrieve
    from kefu.kg.store import KnowledgeGraph

    synthesise(work / "shop", args.products)
    kg = KnowledgeGraph.open()
    t0 = time.perf_counter()
    kg.import_path(work / "shop")
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    retrieve(kg, "预热", at=AT)  # builds the snapshot and the linker once per version
    build_s = time.perf_counter() - t0

    sample = turns(kg, args.turns)
    retrieve_ms = timed(lambda text, cid: retrieve(kg, text, customer_id=cid, at=AT), sample, repeat=3)
    link_ms = timed(lambda text, cid: link(kg, text), sample, repeat=3)

    def like_scan(text: str, cid: str | None) -> list[str]:
        with kg.engine.connect() as conn:
            return list(conn.execute(sql("SELECT sku FROM kg_products WHERE :t LIKE '%' || name || '%'"), {"t": text})
                        .scalars())

    like_ms = timed(like_scan, sample[: max(40, args.turns // 5)])
    linked = sum(1 for text, _ in sample if any(e["type"] == "product" for e in link(kg, text)))

    # ---------------------------------------------------------------------------------------------- pricing
    rng = random.Random(5)
    products = kg.products()
    promotions = kg.promotions(AT)
    assert len(promotions) == 10
    carts = [[CartItem(p.sku, rng.randint(1, 3), p.price_fen, p.category) for p in rng.sample(products, 20)]
             for _ in range(args.carts)]
    codes = {"SHOP20", "PLAT80"}
    mismatches = sum(price_cart(c, promotions, AT, codes).to_dict() != price_cart_bruteforce(c, promotions, AT, codes)
                     .to_dict() for c in carts[:20])
    price_ms = timed(lambda c: price_cart(c, promotions, AT, codes), [(c,) for c in carts])
    brute_ms = timed(lambda c: price_cart_bruteforce(c, promotions, AT, codes), [(c,) for c in carts[:20]])
    from dataclasses import replace

    free = [replace(p, stack_group=None, exclusive=False) for p in promotions]  # worst case: everything stacks
    free_ms = timed(lambda c: price_cart(c, free, AT, codes), [(c,) for c in carts[:50]])
    free_brute_ms = timed(lambda c: price_cart_bruteforce(c, free, AT, codes), [(c,) for c in carts[:10]])

    # ------------------------------------------------------------------ agreement with the sample shop's own pricer
    shop = Path(__file__).resolve().parent.parent / "examples" / "shop"
    agreement = "examples/shop not generated; agreement check skipped."
    if (shop / "dialogues.jsonl").exists():
        os.environ["KEFU_HOME"] = str(work / "sample_home")
        sample_kg = KnowledgeGraph.open()
        sample_kg.import_path(shop)
        same = total = 0
        for line in (shop / "dialogues.jsonl").read_text(encoding="utf-8").splitlines():
            meta = json.loads(line).get("meta") or {}
            refs = meta.get("refs") or {}
            if "cart" in refs and "total_fen" in refs:
                when = datetime.fromisoformat(meta["date"])
                cart = [CartItem(sku, q, sample_kg.product(sku).price_fen, sample_kg.product(sku).category)
                        for sku, q in refs["cart"]]
                total += 1
                same += price_cart(cart, sample_kg.promotions(when), when, set(refs.get("codes") or [])).payable_fen \
                    == refs["total_fen"]
        owners = {o["order_no"]: o["customer_id"]
                  for o in json.loads((shop / "orders.json").read_text(encoding="utf-8"))}
        hits = asked = 0
        for line in (shop / "dialogues.jsonl").read_text(encoding="utf-8").splitlines():
            dialogue = json.loads(line)
            meta = dialogue.get("meta") or {}
            number = (meta.get("refs") or {}).get("order_no")
            if number in owners:
                text = " ".join(m["content"] for m in dialogue["messages"] if m["role"] == "user")
                facts = retrieve(sample_kg, text, customer_id=owners[number], at=datetime.fromisoformat(meta["date"]))
                asked += 1
                hits += any(f["type"] == "order" and f["subject"] == number for f in facts.facts)
        agreement = (f"Against the sample shop generator's own pricer (`examples/shop/generate.py`), {same}/{total} "
                     f"priced dialogues agree to the fen; for {hits}/{asked} sample dialogues about an order, the "
                     "customer's turns (as that order's owner) retrieve that order.")

    def row(name: str, samples: Samples) -> str:
        return (f"| {name} | {len(samples)} | {statistics.median(samples):.3f} | {percentile(samples, 95):.3f} | "
                f"{max(samples):.3f} | {statistics.median(samples.cpu):.3f} | {percentile(samples.cpu, 95):.3f} |")

    from _report import machine, write_section

    p95_r, p95_p = percentile(retrieve_ms, 95), percentile(price_ms, 95)
    cpu_r, cpu_p = percentile(retrieve_ms.cpu, 95), percentile(price_ms.cpu, 95)
    md = f"""## Knowledge graph (`bench/kg_bench.py`)

Machine: {machine()}; load average {os.getloadavg()[0]:.1f} when measured (the cores are shared, so
tails include scheduler noise). Synthetic shop: {args.products:,} SKUs (each with 2 aliases), 10 active promotions (满减 tiers,
每满减 with cap, 折扣, 赠品, 2 coupons, 1 exclusive flash sale; realistic stack groups), 2,000 orders. Import took
{import_s:.1f} s; building the snapshot + linker (trie regex over {args.products * 3:,} names/aliases) {build_s * 1000:.0f} ms,
once per catalogue version. {linked}/{len(sample)} sample turns linked a product.

Latency in ms (wall clock, then the thread's CPU time, which leaves out waiting for a shared core):

| what | n | p50 | p95 | max | CPU p50 | CPU p95 |
|---|---:|---:|---:|---:|---:|---:|
{row("retrieve() — full facts + prompt block + answer", retrieve_ms)}
{row("entity linking only — trie regex", link_ms)}
{row("baseline: entity linking by per-turn SQL LIKE scan", like_ms)}
{row("price_cart — 20 items, 10 promotions (B&B)", price_ms)}
{row("baseline: brute force over all 2^10 subsets", brute_ms)}
{row("price_cart — worst case, all 10 stack freely", free_ms)}
{row("baseline: brute force, all 10 stack freely", free_brute_ms)}

Targets: retrieval p95 < 5 ms — wall **{"met" if p95_r < 5 else "missed"}** ({p95_r:.2f} ms), CPU
**{"met" if cpu_r < 5 else "missed"}** ({cpu_r:.2f} ms); pricing p95 < 5 ms — wall **{"met" if p95_p < 5 else "missed"}**
({p95_p:.2f} ms), CPU **{"met" if cpu_p < 5 else "missed"}** ({cpu_p:.2f} ms). Exactness: branch and bound and brute force disagreed on
{mismatches}/20 carts (must be 0). The SQL LIKE baseline matches full product names only (no aliases), so it
also links fewer products. {agreement} Rerun: `.venv/bin/python bench/kg_bench.py`.
"""
    print(md)
    if not args.no_write:
        write_section("kg", md)


if __name__ == "__main__":
    main()
