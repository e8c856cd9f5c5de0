"""Facts for one customer turn: link entities (products, orders, tracking numbers, colours, sizes, categories) and
gather what the model needs to answer truthfully — as structured facts, as a short Chinese prompt block, and, when one
fact fully answers a simple question, as a direct grounded reply (the light path).

Entity linking is one pass of a precompiled trie-shaped regex over every product name, alias, SKU, category, brand,
style and catalogue colour (longest match wins, like Aho–Corasick), built once per ``kg.version`` and cached on the
graph's snapshot, plus small regexes for order numbers (16 digits), tracking numbers, sizes and colour words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kefu.clock import shop_now
from kefu.kg.promotions import CartItem, Promotion, price_cart
from kefu.kg.recommend import recommend
from kefu.kg.records import Order, Product, color_matches, size_matches
from kefu.kg.store import KnowledgeGraph, Snapshot
from kefu.text import trie_regex as text_trie_regex
from kefu.text.numbers import format_fen
from kefu.types import KefuError

PLAYBOOK_NAMES = {"delay": "物流延迟", "lost": "快递丢件", "damaged": "商品破损", "address_change": "修改地址",
                  "refused": "拒收"}
PLAYBOOK_CUES = {
    "lost": re.compile(r"丢件|丢了|丢失|弄丢|寄丢|找不到(?:包裹|快递)|显示.{0,4}签收.{0,8}没(?:收到|拿到)"),
    "damaged": re.compile(r"破损|坏了|压坏|摔坏|破了|碎了|漏了|损坏|烂了|划痕"),
    "delay": re.compile(r"延迟|延误|还没到|怎么还没|太慢|好几天|迟迟|没动静|不更新|没更新|停滞|一直没到|几天了"),
    "address_change": re.compile(r"改地址|修改地址|换地址|地址(?:填|写)错|改(?:一下)?收货|改成.{0,10}地址|更改地址"),
    "refused": re.compile(r"拒收|拒签"),
}
CUES = {
    "price": re.compile(r"多少钱|价格|价钱|几块|售价|到手价|怎么卖|多钱|啥价"),
    "promotion": re.compile(r"优惠|活动|满减|折扣|打折|几折|优惠券|领券|用券|赠品|送什么|促销|双11|双十一|便宜"),
    "stock": re.compile(r"有货|有没有货|库存|还有吗|还有没有|缺货|补货|现货|断码|有没有.{0,6}[码号色]"),
    "after_sales": re.compile(r"退货|退款|退换|换货|无理由|七天|7天|维修|保修|售后|退回|能退|可以退|怎么退|换个|换一|"
                              r"能修|修一下|修理|返修|开线|掉了|坏了"),
    "order": re.compile(r"订单|我的单|下的单|我买的|发货|物流|快递|到哪|签收|单号|什么时候到|到了没"),
    "recommend": re.compile(r"推荐|适合|哪款|选哪|有什么好|搭配|配件|配什么|替代|类似"),
}
MY_ORDER = re.compile(r"我的(?:订单|快递|包裹|单子|货|退款)|我(?:买|下单|拍)的|我的东西|退款(?:进度|呢|到哪|什么时候)")
# 16 digits, also as typed in chat: 26110899 53055203 or 2611-0899-5305-5203 (no other groupings: two phone numbers
# side by side must not read as an order)
ORDER_NO = re.compile(r"(?<![\d-])(?:\d{16}|\d{8}[ -]\d{8}|\d{4}(?:[ -]\d{4}){3})(?![\d-])")
TRACKING_NO = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2,4}\d{9,15}|\d{12,15})(?![0-9])")
SIZE = re.compile(r"(?<![A-Za-z0-9])(XXXL|XXL|XL|XS|2XL|3XL|4XL|S|M|L)(?![A-Za-z])(?:码|号)?|(?<!\d)(3\d|4\d)(?:码|号)|均码",
                  re.I)
BASE_COLORS = "黑白红蓝灰绿黄粉紫橙棕咖米青"
COLOR_WORD = re.compile(rf"([{BASE_COLORS}]|卡其|藏青|藏蓝|军绿|墨绿|天蓝|深蓝|浅蓝|深灰|浅灰|酒红|玫红|橘)(?:色|的|款|颜色)")
FACT_PRIORITY = {"order_not_found": 0, "order": 1, "logistics": 2, "playbook": 3, "price": 4, "stock": 5, "color": 6,
                 "size": 7, "policy": 8, "product": 9, "relation": 10, "recommendation": 10, "promotion": 11, "faq": 12}
PUNCT = re.compile(r"[\s，。！？、,.!?~～：:；;“”\"'（）()【】\[\]…—-]+")


@dataclass
class Facts:
    """``entities``: what was linked (type, text, start, end, value); ``facts``: dicts with ``type``, ``subject``,
    ``text`` (one Chinese line) and ``data``; ``prompt_block``: the facts for the system prompt; ``answer``: a direct,
    fully grounded reply when one fact answers the turn (price, return window, order status, FAQ), else None."""

    entities: list[dict] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)
    prompt_block: str = ""
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes in fact data become ISO strings)."""
        return json.loads(json.dumps({"entities": self.entities, "facts": self.facts,
                                      "prompt_block": self.prompt_block, "answer": self.answer},
                                     ensure_ascii=False, default=str))


# ----------------------------------------------------------------------------------------------- the entity linker
def trie_regex(terms: list[str]) -> re.Pattern[str] | None:
    """One compiled regex matching any of ``terms`` (trie-shaped, longest term first); None when there are none."""
    pattern = text_trie_regex(terms)
    return re.compile(pattern) if pattern else None


@dataclass
class Linker:
    """The compiled pattern and what each matched term means, for one snapshot version."""

    pattern: re.Pattern[str] | None
    meanings: dict[str, list[tuple[str, str]]]  # term -> [(entity type, value)]
    faq_grams: list[tuple[str, set[str]]]


FILLER = re.compile(r"请问|你好|您好|亲爱的|亲|你们|咱们|麻烦|一下|呀|吗|呢|啊|哈|吧|哦|嘛|么")


def _grams(text: str) -> set[str]:
    """Character bigrams of ``text`` without punctuation and chat fillers (请问/亲/呀/吗 …)."""
    text = FILLER.sub("", PUNCT.sub("", text.lower()))
    return {text[i:i + 2] for i in range(len(text) - 1)} or ({text} if text else set())


def linker(snap: Snapshot) -> Linker:
    """The entity linker of ``snap`` (built on first use, then cached on the snapshot)."""
    cached = snap.cache.get("linker")
    if cached is not None:
        return cached
    meanings: dict[str, list[tuple[str, str]]] = {}

    def add(term: str, kind: str, value: str) -> None:
        term = term.strip()
        if len(term) < 2 and not term.isascii():
            return  # a single Chinese character matches inside too many words
        if term.isascii() and (len(term) < 2 or (len(term) == 2 and not any(c.isdigit() for c in term))):
            return  # "X1" is a model name; "XL" or "Pro" alone are not products
        slot = meanings.setdefault(term, [])
        if (kind, value) not in slot:
            slot.append((kind, value))

    for p in snap.products.values():
        add(p.sku, "product", p.sku)
        add(p.name, "product", p.sku)
        for alias in p.aliases:
            add(alias, "product", p.sku)
        add(p.category, "category", p.category)
        if p.brand:
            add(p.brand, "brand", p.brand)
        if p.style:
            add(p.style, "style", p.style)
        if p.material:
            add(p.material, "material", p.material)
        for color in p.colors:
            add(color, "color", color)
    for category in snap.policies:
        if category != "*":
            add(category, "category", category)
    pattern = trie_regex(sorted(meanings, key=lambda t: (-len(t), t)))
    result = Linker(pattern, meanings, [(f.question, _grams(f.question)) for f in snap.faq])
    snap.cache["linker"] = result
    return result


def _ascii_word(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()


def link(kg: KnowledgeGraph, text: str, *, snap: Snapshot | None = None) -> list[dict]:
    """Entities in ``text``: product/category/brand/style/material/color from the catalogue, size, order_no,
    logistics (tracking number) — each ``{type, text, start, end, value}`` (the shape of ``kefu.types.Entity``)."""
    snap = snap or kg.snapshot()
    lk = linker(snap)
    entities: list[dict] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for m in ORDER_NO.finditer(text):
        value = re.sub(r"[ -]", "", m.group())
        entities.append({"type": "order_no", "text": m.group(), "start": m.start(), "end": m.end(), "value": value})
        taken.append(m.span())
    for m in TRACKING_NO.finditer(text):
        if free(*m.span()):
            entities.append({"type": "logistics", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group()})
            taken.append(m.span())
    if lk.pattern is not None:
        for m in lk.pattern.finditer(text):
            if not free(*m.span()):
                continue
            term = m.group()
            if term.isascii() and (_ascii_word(text, m.start() - 1) or _ascii_word(text, m.end())):
                continue  # inside a longer Latin word or number: "X1" in "SX12"
            for kind, value in lk.meanings.get(term, []):
                entities.append({"type": kind, "text": term, "start": m.start(), "end": m.end(), "value": value})
            taken.append(m.span())
    for m in COLOR_WORD.finditer(text):
        if free(*m.span()):
            entities.append({"type": "color", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group(1)})
            taken.append(m.span())
    for m in SIZE.finditer(text):
        if free(*m.span()):
            value = (m.group(1) or m.group(2) or "均码").upper()
            entities.append({"type": "size", "text": m.group(), "start": m.start(), "end": m.end(), "value": value})
            taken.append(m.span())
    entities.sort(key=lambda e: (e["start"], e["end"], e["type"]))
    return entities


# --------------------------------------------------------------------------------------------------------- facts
def _fact(kind: str, subject: str, text: str, **data: Any) -> dict:
    return {"type": kind, "subject": subject, "text": text, "data": data}


def applicable_promotions(promotions: list[Promotion], product: Product) -> list[Promotion]:
    return [p for p in promotions if p.eligible(product.sku, product.category)]


def unit_price(product: Product, promotions: list[Promotion], at: datetime) -> tuple[int, list[str], list[str]]:
    """Price of one unit under the best combination of the (non-coupon) promotions in force: payable fen, the names
    of the promotions that reduced it, and the gifts (``名称×数量``)."""
    result = price_cart([CartItem(product.sku, 1, product.price_fen, product.category)],
                        [p for p in promotions if p.type != "coupon"], at)
    return (result.payable_fen, [a.name for a in result.applied if a.type != "gift"],
            [f"{g.sku}×{g.quantity}" for g in result.gifts])


def _product_facts(product: Product, colors: list[str], sizes: list[str]) -> list[dict]:
    parts = [f"{product.sku}「{product.name}」：{product.category}", f"品牌{product.brand}" if product.brand else "",
             f"标价¥{format_fen(product.price_fen)}", f"库存{product.stock}件" if product.stock > 0 else "暂时缺货"]
    if product.colors:
        parts.append("颜色" + "/".join(product.colors))
    if product.sizes:
        parts.append("尺码" + "/".join(product.sizes))
    if product.material:
        parts.append(f"材质{product.material}")
    if product.style:
        parts.append(f"风格{product.style}")
    facts = [_fact("product", product.sku, "，".join(p for p in parts if p), **product.to_dict())]
    for color in colors:
        found = [c for c in product.colors if color_matches(color, c)]
        text = (f"「{product.name}」有{'/'.join(found)}" if found
                else f"「{product.name}」没有{color}（可选：{'/'.join(product.colors) or '无颜色选项'}）")
        facts.append(_fact("color", product.sku, text, query=color, available=found))
    for size in sizes:
        found = [s for s in product.sizes if size_matches(size, s)]
        text = (f"「{product.name}」有{found[0]}码" if found
                else f"「{product.name}」没有{size}码（可选：{'/'.join(product.sizes) or '均码'}）")
        facts.append(_fact("size", product.sku, text, query=size, available=found))
    if product.variant_stock and (colors or sizes):
        for key, units in sorted(product.variant_stock.items()):
            color, _, size = key.partition("/")
            if (not colors or any(color_matches(c, color) for c in colors)) and (
                    not sizes or any(size_matches(s, size) for s in sizes)):
                facts.append(_fact("stock", product.sku, f"「{product.name}」{key}：" + (f"库存{units}件" if units > 0
                                                                                       else "缺货"),
                                   variant=key, units=units))
    return facts


def _order_lines(order: Order, snap: Snapshot) -> tuple[str, str | None]:
    names = []
    for item in order.items:
        product = snap.products.get(item.sku)
        names.append(f"{product.name if product else item.sku}×{item.quantity}")
    text = (f"订单{order.order_no}（{order.created_at:%Y-%m-%d}下单）：{order.status}；商品 {'、'.join(names)}；"
            f"实付¥{format_fen(order.paid_fen)}")
    logistics = None
    if order.shipment:
        latest = order.shipment.latest
        logistics = f"物流：{order.shipment.carrier} {order.shipment.tracking_no}"
        if latest:
            logistics += f"，最新 {latest.time:%m-%d %H:%M} {latest.location} {latest.status}".rstrip()
    return text, logistics


def retrieve(kg: KnowledgeGraph, text: str, *, customer_id: str | None = None, at: datetime | None = None,
             max_facts: int = 12, faq_min_similarity: float = 0.6) -> Facts:
    """Facts relevant to ``text``. Orders are shown only when ``customer_id`` owns them; ``at`` defaults to now."""
    at = at or shop_now()
    if at.tzinfo is None:
        raise KefuError("retrieve(at=...): `at` must be timezone-aware")
    snap = kg.snapshot()
    entities = link(kg, text, snap=snap)
    cues = {name: bool(rx.search(text)) for name, rx in CUES.items()}
    exceptions = [kind for kind, rx in PLAYBOOK_CUES.items() if rx.search(text)]
    facts: list[dict] = []
    answers: list[tuple[str, str]] = []  # (question kind, reply) — used only when exactly one

    products: list[Product] = []
    for e in entities:
        if e["type"] == "product" and e["value"] in snap.products and snap.products[e["value"]] not in products:
            products.append(snap.products[e["value"]])
    products = products[:3]
    colors = list(dict.fromkeys(e["value"] for e in entities if e["type"] == "color"))
    sizes = list(dict.fromkeys(e["value"] for e in entities if e["type"] == "size"))
    categories = list(dict.fromkeys([e["value"] for e in entities if e["type"] == "category"]
                                    + [p.category for p in products]))

    # --- orders: only the customer's own; someone else's number reads as "not found", never its contents
    orders: list[Order] = []
    looked_up: set[str] = set()
    for e in entities:
        if e["type"] in ("order_no", "logistics"):
            if e["value"] in looked_up:
                continue
            looked_up.add(e["value"])
        if e["type"] == "order_no":
            order = kg.order(e["value"])
            if order and customer_id and order.customer_id == customer_id:
                orders.append(order)
            else:
                facts.append(_fact("order_not_found", e["value"], f"订单{e['value']}：未查到（不存在或不属于当前账号）"))
                answers.append(("order", f"没有查到订单{e['value']}的信息，请核对订单号，或用下单的账号联系我们。"))
        elif e["type"] == "logistics":
            order = kg.order_by_tracking(e["value"])
            if order and customer_id and order.customer_id == customer_id:
                orders.append(order)
            elif not e["value"].isdigit() or re.search(r"运单|快递单|单号|物流", text):  # bare digits may be a phone
                facts.append(_fact("order_not_found", e["value"], f"运单{e['value']}：未查到当前账号的订单"))
    mentioned = any(e["type"] in ("order_no", "logistics") for e in entities)
    if not orders and not mentioned and customer_id and products and (cues["after_sales"] or cues["order"] or exceptions):
        wanted = {p.sku for p in products}  # "买的X开线了": the customer's own order holding X
        orders = [o for o in kg.orders_of(customer_id, limit=20) if wanted & {i.sku for i in o.items}][:1]
    if not orders and not mentioned and customer_id and (MY_ORDER.search(text) or ((cues["order"] or exceptions) and not products)):
        orders = kg.orders_of(customer_id, limit=1)
    seen_orders: set[str] = set()
    for order in orders:
        if order.order_no in seen_orders:
            continue
        seen_orders.add(order.order_no)
        line, logistics = _order_lines(order, snap)
        facts.append(_fact("order", order.order_no, line, **order.to_dict()))
        reply = f"您的订单{order.order_no}当前状态：{order.status}。"
        if logistics:
            facts.append(_fact("logistics", order.order_no, logistics))
            reply += logistics.replace("物流：", "物流信息：") + "。"
        answers.append(("order", reply))
        categories.extend(snap.products[i.sku].category for i in order.items if i.sku in snap.products)

    # --- products: attributes, colour/size/stock, promotions and price now
    active = [p for p in snap.promotions if p.active(at)]
    promo_facts: dict[str, dict] = {}
    for product in products:
        facts.extend(_product_facts(product, colors, sizes))
        wants_promotions = cues["price"] or cues["promotion"] or not (any(cues.values()) or colors or sizes)
        for promotion in applicable_promotions(active, product) if wants_promotions else []:
            if promotion.id not in promo_facts:
                extra = f"（需券码{promotion.code}）" if promotion.type == "coupon" else ""
                exclusive = "，不与其他优惠同享" if promotion.exclusive else ""
                promo_facts[promotion.id] = _fact(
                    "promotion", promotion.id,
                    f"活动「{promotion.name}」：{promotion.rule_text()}{extra}，范围{promotion.scope_text()}{exclusive}，"
                    f"至{promotion.ends_at:%m-%d %H:%M}", **promotion.to_dict())
        if cues["price"] or cues["promotion"]:
            payable, used, gifts = unit_price(product, active, at)
            if used:
                line = (f"「{product.name}」标价¥{format_fen(product.price_fen)}，单件按当前活动（{'、'.join(used)}）"
                        f"到手¥{format_fen(payable)}")
            else:
                line = f"「{product.name}」标价¥{format_fen(product.price_fen)}，单件买暂无可用的减价活动"
            if gifts:
                names = []
                for gift in gifts:
                    sku, _, qty = gift.partition("×")
                    names.append(f"{snap.products[sku].name if sku in snap.products else sku}×{qty}")
                line += "，另赠" + "、".join(names)
            facts.append(_fact("price", product.sku, line, list_fen=product.price_fen, payable_fen=payable,
                               promotions=used))
            answers.append(("price", line + "。"))
        if cues["stock"] and not (colors or sizes):
            answers.append(("stock", f"「{product.name}」目前" + (f"有货（库存{product.stock}件）。" if product.stock > 0
                                                                 else "暂时缺货。")))
        elif cues["stock"] and (colors or sizes) and product.variant_stock:
            variant = [f for f in facts if f["type"] == "stock" and f["subject"] == product.sku]
            if len(variant) == 1:
                answers.append(("stock", variant[0]["text"] + "。"))
    facts.extend(promo_facts.values())
    if not products and cues["promotion"]:
        for promotion in active:
            if promotion.type != "coupon":
                facts.append(_fact("promotion", promotion.id, f"活动「{promotion.name}」：{promotion.rule_text()}，范围"
                                   f"{promotion.scope_text()}，至{promotion.ends_at:%m-%d %H:%M}", **promotion.to_dict()))

    # --- relations when the customer asks what goes with / instead of a product
    if cues["recommend"]:
        for product in products:
            for relation, other, forward in snap.related(product.sku):
                target = snap.products.get(other)
                if target:
                    word = {("compatible-with", True): "可搭配", ("compatible-with", False): "可搭配",
                            ("alternative-to", True): "可替代为", ("alternative-to", False): "可替代为",
                            ("accessory-of", True): "是配件，适用于", ("accessory-of", False): "的配件"}[
                        (relation, forward)]
                    facts.append(_fact("relation", product.sku, f"「{product.name}」{word}：{target.sku}「{target.name}」"
                                       f"¥{format_fen(target.price_fen)}", relation=relation, target=target.sku,
                                       forward=forward))

    # --- a category without a product (想买个登山鞋 / 冲锋衣推荐): a few diverse in-stock picks
    if not products and categories and not orders and (cues["recommend"] or not any(cues.values())):
        colour = colors[0] if colors else None
        size = sizes[0] if sizes else None
        style = next((e["value"] for e in entities if e["type"] == "style"), None)
        for pick in recommend(kg, category=categories[0], color=colour, size=size, style=style, limit=3, snapshot=snap):
            p = pick.product
            facts.append(_fact("recommendation", p.sku, f"可推荐 {p.sku}「{p.name}」¥{format_fen(p.price_fen)}，"
                               f"{p.style or p.category}（{'、'.join(pick.reasons)}）", **pick.to_dict()))

    # --- after-sales policy of the categories in play
    if cues["after_sales"] or "damaged" in exceptions:
        for category in list(dict.fromkeys(categories))[:3] or ["*"]:
            policy = snap.policy(category)
            if policy is None:
                continue
            label = "全店默认" if category == "*" else category
            summary = policy.summary()
            facts.append(_fact("policy", category, f"售后·{label}（{policy.category if policy.category != '*' else '默认'}政策）：{summary}",
                               **policy.to_dict()))
            if len(set(categories)) == 1 and not orders:  # a specific category, not the shop default
                answers.append(("after_sales", f"{label}商品{summary}。"))

    # --- logistics-exception playbooks
    for kind in exceptions:
        playbook = snap.playbooks.get(kind)
        if playbook:
            text_pb = (f"预案·{PLAYBOOK_NAMES[kind]}：步骤 " + "→".join(playbook.steps)
                       + ("；可承诺：" + "、".join(playbook.allowed_promises) if playbook.allowed_promises else "")
                       + ("；禁止承诺：" + "、".join(playbook.forbidden_promises) if playbook.forbidden_promises else "")
                       + (f"；超过{playbook.escalate_after_hours}小时未解决转人工" if playbook.escalate_after_hours else ""))
            facts.append(_fact("playbook", kind, text_pb, **playbook.to_dict()))

    # --- FAQ: exact or near match
    faq_answer = None
    grams = _grams(text)
    best = (0.0, -1)
    for k, (_, qgrams) in enumerate(linker(snap).faq_grams):
        if grams and qgrams:
            score = len(grams & qgrams) / len(grams | qgrams)
            if score > best[0]:
                best = (score, k)
    if best[1] >= 0 and best[0] >= faq_min_similarity:
        entry = snap.faq[best[1]]
        faq_answer = entry.answer
        facts.append(_fact("faq", entry.intent or "faq", f"常见问题「{entry.question}」：{entry.answer}",
                           question=entry.question, answer=entry.answer, similarity=round(best[0], 3)))

    asked = {"price" if name == "promotion" else name for name, hit in cues.items() if hit and name != "recommend"}
    if any(e["type"] in ("order_no", "logistics") for e in entities):
        asked.add("order")
    facts.sort(key=lambda f: FACT_PRIORITY.get(f["type"], 50))  # stable: keeps order inside a kind
    facts = facts[:max_facts]
    answer = None
    if exceptions:
        answer = None  # an exception needs judgement (the playbook), not a canned line
    elif len(answers) == 1 and asked <= {answers[0][0]}:  # one question, fully answered by one fact
        answer = answers[0][1]
    elif not answers and faq_answer and not products and not orders:
        answer = faq_answer
    block = "【店铺知识】\n" + "\n".join(f"- {f['text']}" for f in facts) if facts else ""
    return Facts(entities=entities, facts=facts, prompt_block=block, answer=answer)
