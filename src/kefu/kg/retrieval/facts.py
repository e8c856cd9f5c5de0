"""Facts for one customer turn: what the linked entities say (products, orders, promotions, policies, playbooks,
FAQ) as typed facts and a prompt block, and the direct grounded reply when the shop's data settles every question in
the turn (``answers``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kefu.clock import shop_now
from kefu.kg.promotions import CartItem, Promotion, price_cart
from kefu.kg.recommend import recommend
from kefu.kg.replies import ReplyIndex
from kefu.kg.records import Order, Product, color_matches, size_matches
from kefu.kg.retrieval import answers as light
from kefu.kg.retrieval.linker import grams, link, linker
from kefu.kg.store import KnowledgeGraph, Snapshot
from kefu.kg.tools.returns import return_eligibility
from kefu.safety.injection import detect
from kefu.text.normalize import to_halfwidth, to_simplified
from kefu.text.numbers import format_fen
from kefu.types import Dialogue, KefuError, Turn

BLOCK_HEADER = "【店铺知识】"  # opens the facts block the model is given; never part of an answer
PLAYBOOK_NAMES = {"delay": "物流延迟", "lost": "快递丢件", "damaged": "商品破损", "address_change": "修改地址",
                  "refused": "拒收"}
PLAYBOOK_CUES = {
    "lost": re.compile(r"丢件|丢了|丢失|弄丢|寄丢|找不到(?:包裹|快递)|显示.{0,4}签收.{0,8}没(?:收到|拿到)"),
    "damaged": re.compile(r"破损|坏了|压坏|摔坏|破了|碎了|漏了|损坏|烂了|划痕"),
    "delay": re.compile(r"延迟|延误|还没到|怎么还没|太慢|好几天|迟迟|没动静|不更新|没更新|停滞|一直没到|几天了|没动了"),
    "address_change": re.compile(r"改地址|修改地址|换地址|地址(?:填|写)错|改(?:一下)?收货|改成.{0,10}地址|更改地址"),
    "refused": re.compile(r"拒收|拒签"),
}
CUES = {
    "price": re.compile(r"多少钱|价格|价钱|价位|几块|售价|到手价|怎么卖|咋卖|多钱|啥价|什么价|一共多少|总共多少|共多少|合计|总价|"
                        r"原价|标价|现价|单价|折后|打完折|卖多少|一件多少|多少一件|"
                        r"最后付|付多少|最后多少|秒杀价|(?i:how much|price|cost)|"
                        rf"[{light.QTY_UNITS}]\s*多少(?![克天度升斤米码号gGmMlL])"),  # 两件多少
    "promotion": re.compile(r"优惠|活动|满减|折扣|打折|几折|优惠券|领券|用券|赠品|送什么|促销|双11|双十一|便宜|"
                            r"送啥|送不送|赠啥|赠什么|有赠|送东西|送点"),
    "stock": re.compile(r"有货|有没有货|库存|还有吗|还有没有|缺货|补货|现货|断码|有没有.{0,6}[码号色]|有货没|卖完|"
                        r"还剩|剩[几多]|还有几|还有多少|断货|还有没|(?:能|可以)(?:直接)?(?:拍|下单)|能买到|还能买|还卖吗|"
                        r"(?i:in stock|sold out)"),
    "after_sales": re.compile(r"退货|退款|退换|换货|无理由|七天|7天|维修|保修|售后|退回|能退|可以退|怎么退|换个|换一|"
                              r"能修|修一下|修理|返修|开线|掉了|坏了|能换|可以换|换吗|换码|质保"),
    "order": re.compile(r"订单|我的单|下的单|我买的|发货|物流|快递|到哪|签收|单号|什么时候到|到了没|取消|那[单笔]|发了|发出|寄出|寄了|"
                        r"到了[吗么没]|到没到|(?:啥时候|几时|多久|几天)能?到|退了[吗么没]|退成功|"
                        r"(?:什么时候|啥时候|几时|多久|何时)(?:能|才|可以)?发|"
                        r"(?i:tracking|track|order|shipped|shipping|delivery|deliver|parcel|package)"),
    "recommend": re.compile(r"推荐|适合|哪款|选哪|有什么好|搭配|配件|配什么|替代|类似"),
}
MY_ORDER = re.compile(r"我的(?:订单|快递|包裹|单子|货|退款)|我(?:买|下单|拍)的|我的东西|我那[个双件单]|"
                      r"退款(?:进度|呢|到哪|什么时候|啥时候|多久|到账|还没到)|上一?[单笔]|上次(?:买|下单|拍)|最近(?:的|一)?[单笔]|"
                      r"刚(?:买|下单|拍)的|(?i:my (?:order|package|parcel))")
GIFT_BEFORE = re.compile(r"[送赠](?:个|一个|的|不送)?$")
PAID = re.compile(r"实付|付了多少|花了多少|支付了多少|付款多少")
# asking for someone else's data: another customer's id, "all customers"
FOREIGN = re.compile(r"(?<![A-Za-z0-9])C\d{4,}(?!\d)|所有(?:顾客|客户|人|用户|买家)|别人的|其他(?:顾客|客户|人)的")
AVAILABILITY = re.compile(r"有吗|有没|有的吗|有不|还有|能买|可以买|有.{0,8}[吗么]")
STOCK_ONLY = re.compile(r"有货|库存|缺货|现货|补货|断码|卖完")  # "六折清仓还有吗" asks about the promotion, not stock
SHIPPED_STATUSES = ("已发货", "已签收", "已完成")
FACT_PRIORITY = {"order_not_found": 0, "order": 1, "logistics": 2, "playbook": 3, "price": 4, "coupon": 4, "quote": 4, "stock": 5,
                 "color": 6, "size": 7, "attribute": 7, "policy": 8, "product": 9, "promotion_status": 9,
                 "relation": 10, "recommendation": 10, "promotion": 11, "faq": 12}


@dataclass
class Facts:
    """``entities``: what was linked (type, text, start, end, value); ``facts``: dicts with ``type``, ``subject``,
    ``text`` (one Chinese line) and ``data``; ``prompt_block``: the facts for the system prompt; ``answer``: a direct,
    fully grounded reply when the facts settle every question in the turn, else None; ``parts``: that answer's
    pieces by the kind of question they settle (``order``, ``price``, ``after_sales``...), so that a caller which
    states the order from a live tool can add the rest."""

    entities: list[dict] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)
    prompt_block: str = ""
    answer: str | None = None
    parts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes in fact data become ISO strings)."""
        return json.loads(json.dumps({"entities": self.entities, "facts": self.facts,
                                      "prompt_block": self.prompt_block, "answer": self.answer,
                                      "parts": self.parts},
                                     ensure_ascii=False, default=str))


def _fact(kind: str, subject: str, text: str, **data: Any) -> dict:
    return {"type": kind, "subject": subject, "text": text, "data": data}


def applicable_promotions(promotions: list[Promotion], product: Product) -> list[Promotion]:
    return [p for p in promotions if p.eligible(product.sku, product.category)]


def unit_price(product: Product, promotions: list[Promotion], at: datetime) -> tuple[int, list[str], list[str]]:
    """Price of one unit under the best combination of the (non-coupon) promotions in force: payable fen, the names
    of the promotions that reduced it, and the gifts (``SKU×数量``)."""
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
    if product.description:
        parts.append(f"说明：{product.description}")
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


def _products(snap: Snapshot, entities: list[dict], text: str) -> list[Product]:
    """The products named, at most 3; "X1冲锋衣女款": the 女款 sibling of a 男款 name (and the other way round) when
    the word stands right by the name ("女款徒步鞋一件加三合一冲锋衣两个": 女款 is the shoes', not the jacket's). The
    entity's value becomes the sibling, so its quantity follows."""
    by_name = {p.name: p for p in snap.products.values()}
    out: list[Product] = []
    for e in entities:
        product = snap.products.get(e["value"]) if e["type"] == "product" else None
        if product is None:
            continue
        near = text[max(0, e["start"] - 4):e["end"] + 4]
        for mine, other in (("男款", "女款"), ("女款", "男款")):
            if mine in product.name and other in near and mine not in near:
                product = by_name.get(product.name.replace(mine, other), product)
                e["value"] = product.sku
        if product not in out:
            out.append(product)
    return out[:3]


def _own_orders(kg: KnowledgeGraph, snap: Snapshot, text: str, entities: list[dict], customer_id: str | None,
                products: list[Product], cues: dict[str, bool], exceptions: list[str], facts: list[dict],
                say) -> list[Order]:
    """Orders the turn is about: only the customer's own; someone else's number reads as "not found", never its
    contents."""
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
                # the number as the customer typed it: the normalised form of someone else's is not said back
                say("order", f"没有查到订单{e['text']}的信息，请核对订单号，或用下单的账号联系我们。")
        elif e["type"] == "logistics":
            order = kg.order_by_tracking(e["value"])
            if order and customer_id and order.customer_id == customer_id:
                orders.append(order)
            elif not e["value"].isdigit() or re.search(r"运单|快递单|单号|物流", text):  # bare digits may be a phone
                facts.append(_fact("order_not_found", e["value"], f"运单{e['value']}：未查到当前账号的订单"))
                say("order", f"没有查到运单{e['text']}对应的您的订单，请核对运单号，或用下单的账号联系我们。")
    mentioned = any(e["type"] in ("order_no", "logistics") for e in entities)
    if mentioned or not customer_id or FOREIGN.search(text.replace(customer_id, "")):
        return orders
    mine = MY_ORDER.search(text)
    if products and (cues["after_sales"] or cues["order"] or exceptions or mine or PAID.search(text)):
        wanted = {p.sku for p in products}  # "买的X开线了": the customer's own order holding X (the most of them)
        holding = [o for o in kg.orders_of(customer_id, limit=20) if wanted & {i.sku for i in o.items}]
        holding.sort(key=lambda o: -len(wanted & {i.sku for i in o.items}))  # stable: newest first among equals
        orders = holding[:1]
    if not orders and (mine or ((cues["order"] or exceptions or PAID.search(text)) and not products)):
        recent = kg.orders_of(customer_id, limit=20)
        if "退款" in text:  # "我的退款呢": the order being refunded
            recent = [o for o in recent if o.status == "退款中"] or recent
        orders = recent[:1]
    return orders


QUALITY = re.compile(r"质量|坏了|破损|开线|发错|错发")


def _eligibility_lines(kg: KnowledgeGraph, order: Order, at: datetime, text: str, products: list[Product],
                       categories: list[str]) -> list[str]:
    """Whether the order's items (those named, else those of the categories asked, gifts left out) can be returned,
    exchanged or repaired at ``at``, by ``kefu.kg.tools.returns``; one line per item, with the signing date rather
    than a count of days (every figure in it is the shop's)."""
    named = {p.sku for p in products}
    reason = "quality" if QUALITY.search(text) else "no_reason"
    signed = order.delivered_at
    lines = []
    for item in order.items:
        product = kg.product(item.sku)
        category = product.category if product else "*"
        wanted = item.sku in named if named else category in categories
        if not wanted or (item.unit_price_fen == 0 and item.sku not in named):
            continue
        policy = kg.policy(category)
        # "拆了": opened only where an exception of its policy is about this item (袜子, not a 速干T恤 for 内裤)
        opened = bool(policy and product and light.applicable_exceptions(policy, text, [product]))
        entry = return_eligibility(kg, order, at, sku=item.sku, reason=reason, opened=opened)[0]
        head = f"订单里的「{entry['name']}」"
        if entry.get("days_since_delivery") is None or policy is None or signed is None:
            if order.status in ("待付款", "已取消"):
                lines.append(head + "：" + "；".join(entry["reasons"]) + "。")
            continue  # not signed yet: the windows start at signing, the policy line says them
        first = entry["reasons"][0]
        if "天" in first and "签收" in first:  # the 7天无理由 window, said without the count of days
            first = (f"在{policy.return_days}天无理由退货期内" if entry["returnable"]
                     else f"已超过{policy.return_days}天无理由退货期")
        said = [first]
        for days, window, inside in ((policy.exchange_days, "换货期", entry["exchangeable"]),
                                     (policy.repair_days, "保修期", entry["repairable"])):
            if days:
                said.append(f"在{days}天{window}内" if inside else f"已过{days}天{window}")
        lines.append(f"{head}{signed.month}月{signed.day}日签收，" + "，".join(said) + "。")
    return list(dict.fromkeys(lines))  # the same item twice (a bought pair of socks and a gift pair) says it once


FAQ_MIN_COSINE = 0.5  # idf-weighted: 可以开发票吗 ~ 能开发票吗？ 0.68, 什么时候发货 ~ 双11活动到什么时候？ 0.40
# question words said many ways, one spelling for the FAQ match (什么时候发货 is 下单后多久发货？)
QUESTION_WORDS = ((re.compile(r"什么时候|啥时候|几时|多长时间|多少天|几天"), "多久"),
                  (re.compile(r"咋办|怎么处理|如何处理|怎么弄"), "怎么办"), (re.compile(r"可不可以|能不能|可以|能否"), "能"))
_ASKING = re.compile("|".join(sorted({w for _, w in QUESTION_WORDS}, key=len, reverse=True)))


def faq_wording(text: str) -> str:
    """``text`` with its question words in one spelling (``QUESTION_WORDS``)."""
    for pattern, word in QUESTION_WORDS:
        text = pattern.sub(word, text)
    return text


def _topic_grams(text: str) -> set[str]:
    """The character bigrams of what is asked about, question words left out (多久到 has none: 到 alone)."""
    return set().union(*(grams(part) for part in _ASKING.split(faq_wording(text)) if part)) if text else set()


def faq_index(snap: Snapshot) -> ReplyIndex:
    """The shop's FAQ as a past-reply index (question → answer; ``kefu.kg.replies``), cached on the snapshot: its
    ``similarity`` weighs the words that tell questions apart (发票, 上班) above the ones every question has (可以,
    吗), which the character-bigram overlap does not."""
    cached = snap.cache.get("faq_index")
    if cached is None:
        cached = ReplyIndex.build([Dialogue(f"faq{k}", [Turn("user", faq_wording(entry.question)),
                                                         Turn("assistant", entry.answer)])
                                   for k, entry in enumerate(snap.faq)], context_turns=0)
        snap.cache["faq_index"] = cached
    return cached


def retrieve(kg: KnowledgeGraph, text: str, *, customer_id: str | None = None, at: datetime | None = None,
             max_facts: int = 12, faq_min_similarity: float = 0.6) -> Facts:
    """Facts relevant to ``text``. Orders are shown only when ``customer_id`` owns them; ``at`` defaults to the
    shop's clock. ``answer`` is set only when every question in the turn is settled by the shop's data."""
    at = at or shop_now()
    if at.tzinfo is None:
        raise KefuError("retrieve(at=...): `at` must be timezone-aware")
    text = to_simplified(to_halfwidth(text))  # "Ｘ１冲锋衣", "X1衝鋒衣多少錢": the catalogue's script and width
    snap = kg.snapshot()
    entities = link(kg, text, snap=snap)
    cues = {name: bool(rx.search(text)) for name, rx in CUES.items()}
    exceptions = [kind for kind, rx in PLAYBOOK_CUES.items() if rx.search(text)]
    facts: list[dict] = []
    parts: dict[str, list[str]] = {}  # question kind -> reply pieces

    def say(kind: str, reply: str) -> None:
        parts.setdefault(kind, []).append(reply)

    # "珠峰多少钱 还送保温杯吗": a product right after 送/赠 is a gift asked about, not a second product to price
    gift_asked = [e for e in entities if e["type"] in ("product", "category")
                  and GIFT_BEFORE.search(text[max(0, e["start"] - 4):e["start"]])]
    rest = [e for e in entities if not any(e is g for g in gift_asked)]
    if gift_asked and any(e["type"] == "product" for e in rest):
        entities = rest
    else:
        gift_asked = []
    products = _products(snap, entities, text)
    colors = list(dict.fromkeys(e["value"] for e in entities if e["type"] == "color"))
    sizes = list(dict.fromkeys(e["value"] for e in entities if e["type"] == "size"))
    categories = list(dict.fromkeys([e["value"] for e in entities if e["type"] == "category"]
                                    + [p.category for p in products]))
    if products:  # a product's own category, not the word that named it ("速干T恤" the product, 速干T恤 the category)
        categories = list(dict.fromkeys(p.category for p in products))
    unlinked = light.mask(text, entities)  # "大容量保温壶" names a product; it does not ask about capacity
    attributes = light.attributes_asked(unlinked) if products else []
    options = light.options_asked(unlinked) if products else []
    fields = light.policy_fields(text)
    coupons, unknown_codes = light.coupons_named(snap, text, entities)
    named = [p for p in light.promotions_named(snap, text, entities) if p not in coupons]
    # "用新人券" / "用满200减30的券": a coupon named by its name or rule is presented as if by its code
    coupons += [p for p in named if p.type == "coupon"]
    named = [p for p in named if p.type != "coupon"]
    wanted = light.quantities(text, entities)

    # --- orders
    named_categories = list(categories)  # what the customer named, before the order's own categories join
    orders = _own_orders(kg, snap, text, entities, customer_id, products, cues, exceptions, facts, say)
    seen_orders: set[str] = set()
    for order in orders:
        if order.order_no in seen_orders:
            continue
        seen_orders.add(order.order_no)
        line, logistics = _order_lines(order, snap)
        facts.append(_fact("order", order.order_no, line, **order.to_dict()))
        reply = f"您的订单{order.order_no}当前状态：{order.status}。"
        if PAID.search(text):
            reply += f"实付¥{format_fen(order.paid_fen)}。"
        if logistics:
            facts.append(_fact("logistics", order.order_no, logistics))
            reply += logistics.replace("物流：", "物流信息：") + "。"
        say("order", reply)
        categories.extend(snap.products[i.sku].category for i in order.items if i.sku in snap.products)
    about_order = bool(orders) or any(e["type"] in ("order_no", "logistics") for e in entities)
    # "我的订单到哪了？另外X1冲锋衣多少钱": products that the turn's order does not hold are a shopping question of
    # their own; a product of the order ("我买的X1多少钱") is asked about that order
    ordered = {i.sku for o in orders for i in o.items}
    shopping = not about_order or (bool(orders) and not PAID.search(text) and all(p.sku not in ordered for p in products))

    # --- products: attributes, colour/size/stock, promotions and the price now
    active = [p for p in snap.promotions if p.active(at)]
    promo_facts: dict[str, dict] = {}
    wants_price = shopping and bool(products) and (
        cues["price"] or cues["promotion"] or bool(coupons or unknown_codes)
        or (bool(wanted) and bool(light.CART_WORDS.search(text)))
        or (bool(wanted) and not any(cues.values()) and not (colors or sizes or attributes or options)))  # 来五件
    for product in products:
        facts.extend(_product_facts(product, colors, sizes))
        wants_promotions = wants_price or not (any(cues.values()) or colors or sizes or attributes or options)
        for promotion in applicable_promotions(active, product) if wants_promotions and shopping else []:
            if promotion.id not in promo_facts:
                extra = f"（需券码{promotion.code}）" if promotion.type == "coupon" else ""
                exclusive = "，不与其他优惠同享" if promotion.exclusive else ""
                promo_facts[promotion.id] = _fact(
                    "promotion", promotion.id,
                    f"活动「{promotion.name}」：{promotion.rule_text()}{extra}，范围{promotion.scope_text()}{exclusive}，"
                    f"至{promotion.ends_at:%m-%d %H:%M}", **promotion.to_dict())
    quoted = None
    if products and shopping and (wants_price or named):
        together = len(products) == 1 or bool(wanted) or bool(light.CART_WORDS.search(text))
        carts = [[(p, wanted.get(p.sku, 1)) for p in products]] if together else [[(p, 1)] for p in products]
        for cart in carts:
            quoted = light.quote(snap, cart, at, coupons)
            result = quoted.result
            facts.append(_fact("price", "+".join(p.sku for p, _ in cart), quoted.text, list_fen=result.total_fen,
                               payable_fen=result.payable_fen, promotions=[a.name for a in result.applied
                                                                           if a.type != "gift"],
                               cart=[[p.sku, q] for p, q in cart], coupons=[c.code for c in coupons]))
            say("price", quoted.text + "。")
        notes = light.coupon_notes(snap, coupons, unknown_codes, carts[0], quoted.result if together else None, at)
        for note in notes:
            facts.append(_fact("coupon", "", note))
        if notes:
            parts["price"] = ["；".join(notes) + "。"] + parts["price"]
    applied = {a.id for a in quoted.result.applied} if quoted else set()
    given = {g.sku for g in quoted.result.gifts} if quoted else set()
    spans: dict[tuple[int, int], dict] = {}  # "保温杯" is a product and a category at one span: the product
    for e in gift_asked:
        if e["type"] == "product" or (e["start"], e["end"]) not in spans:
            spans[(e["start"], e["end"])] = e
    for e in spans.values():
        def is_it(sku: str | None, e: dict = e) -> bool:  # the gift asked about: that product, or one of that category
            gift = snap.products.get(sku or "")
            return sku == e["value"] if e["type"] == "product" else bool(gift and gift.category == e["value"])

        if any(is_it(sku) for sku in given):
            continue  # the quote says 另赠
        gifts = [p for p in snap.promotions if p.type == "gift" and is_it(p.gift_sku)]
        name = snap.products[e["value"]].name if e["type"] == "product" else e["value"]
        lines = [light.promotion_line(p, at) + ("；这单未达到赠送条件，不送" if quoted and p.active(at) else "")
                 for p in gifts]
        for line in lines or [f"目前没有赠送「{name}」的活动"]:
            facts.append(_fact("promotion_status", e["value"], line))
            say("promotion", line + "。")
    for p in named:
        if p.id in applied:
            continue
        line = light.promotion_line(p, at)
        if p.active(at) and products and not any(p.eligible(x.sku, x.category) for x in products):
            line = f"「{p.name}」不适用于所选商品（范围{p.scope_text()}）"
        facts.append(_fact("promotion_status", p.id, line, **p.to_dict()))
        say("promotion", line + "。")
    if not products and (coupons or unknown_codes):
        for note in light.coupon_notes(snap, coupons, unknown_codes, [], None, at):
            say("promotion", note + "。")
        for c in coupons:
            if c.active(at):
                line = light.promotion_line(c, at)
                facts.append(_fact("promotion_status", c.id, line, **c.to_dict()))
                say("promotion", line + "。")
    # "满300减50和八五折能一起用吗": the stacking rule on what was named, before the details; with a priced cart the
    # quote and the coupon notes say what went together, except that an exclusive promotion took the cart alone
    stacking = None
    if light.STACK_ASKED.search(text) and not products:
        together = [p for p in named + coupons if p.active(at)]
        stacking = light.stacking_line(together)
    elif light.STACK_ASKED.search(text) and not coupons:
        together = [p for p in snap.promotions if p.id in applied and p.exclusive]
        if together:  # "秒杀能和满减一起用吗"
            stacking = f"「{together[0].name}」不与其他优惠同享，不能再叠加满减或优惠券"
    if stacking:
        facts.append(_fact("promotion_status", "+".join(p.id for p in together), stacking,
                           promotions=[p.id for p in together]))
        parts.setdefault("promotion", []).insert(0, stacking + "。")
    facts.extend(promo_facts.values())
    if not products and not about_order and (cues["promotion"] or cues["price"]) and not (named or coupons):
        coupon_asked = bool(light.COUPON_WORD.search(text))
        shown = [p for p in active if (p.type == "coupon") == coupon_asked
                 and (not categories or any(p.eligible("", c) for c in categories))]
        for promotion in shown:
            facts.append(_fact("promotion", promotion.id, f"活动「{promotion.name}」：{promotion.rule_text()}，范围"
                               f"{promotion.scope_text()}，至{promotion.ends_at:%m-%d %H:%M}", **promotion.to_dict()))
        amount = light.amount_quote(snap, text, at) if re.search(r"满减|能减|减多少|优惠多少|便宜多少", text) else None
        if amount:  # the promotion engine's arithmetic on the amount asked about is a fact of this turn
            facts.append(_fact("quote", "cart", amount.rstrip("。")))
            say("promotion", amount)
        elif shown and re.search(r"什么|哪些|有没有|有吗|还有|(?:打折|折扣|活动|优惠|满减|促销)[吗么没不]", text):
            say("promotion", "当前进行中的" + ("优惠券" if coupon_asked else "活动") + "："
                + "；".join(light.promotion_line(p, at) for p in shown) + "。")

    # --- stock, colours and sizes; attributes quoted from the product's own fields
    stock_words = cues["stock"] and (not named or bool(colors or sizes) or bool(STOCK_ONLY.search(text)))
    stock_asked = bool(products) and shopping and (stock_words or (bool(colors or sizes) and not (
        attributes or options) and (bool(AVAILABILITY.search(text)) or not any(cues.values()))))  # "X1女款粉色S码"
    if stock_asked and len(products) == 1:
        line = light.stock_answer(snap, products[0], colors, sizes)
        facts.append(_fact("stock", products[0].sku, line.rstrip("。")))
        say("stock", line)
    if (attributes or options) and len(products) == 1:
        line = light.attribute_answer(products[0], attributes, options)
        if line:
            facts.append(_fact("attribute", products[0].sku, line.rstrip("。"), asked=attributes + options))
            say("attribute", line)

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
    after_sales = cues["after_sales"] or bool(fields)
    if after_sales or "damaged" in exceptions:
        for category in list(dict.fromkeys(categories))[:3] or ["*"]:
            policy = snap.policy(category)
            if policy is None:
                continue
            label = "全店默认" if category == "*" else category
            facts.append(_fact("policy", category, f"售后·{label}（{policy.category if policy.category != '*' else '默认'}"
                               f"政策）：{policy.summary()}", **policy.to_dict()))
        if not categories:  # the shop-wide answer names every category's exceptions: they are facts of this turn
            excluded = list(dict.fromkeys(e for p in snap.policies.values() for e in p.exceptions))
            if excluded:
                facts.append(_fact("policy", "*", "售后·各品类例外：" + "；".join(excluded), exceptions=excluded))
        if not orders:
            line = light.policy_answer(snap, list(dict.fromkeys(categories)), text, products)
            if line:
                say("after_sales", line)
        elif fields and not PAID.search(text):  # "我要退货 订单X": the windows of what that order holds
            held = list(dict.fromkeys(categories))
            chosen = [c for c in held if c in named_categories][:3] or held[:3]
            # "我买的珠峰能退吗": where the order's items stand now (days since signing against the windows)
            for order in orders[:1]:
                for line in _eligibility_lines(kg, order, at, text, products, chosen):
                    facts.append(_fact("policy", order.order_no, line.rstrip("。"), order_no=order.order_no))
                    say("after_sales", line)
            # "登山鞋什么时候发货？能换码吗": the category named, not every category of the order
            for category in chosen:
                line = light.policy_answer(snap, [category], text, products)
                if line:
                    say("after_sales", line)

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
    question_grams = grams(text)
    best = (0.0, -1)
    for k, (_, qgrams) in enumerate(linker(snap).faq_grams):
        if question_grams and qgrams:
            score = len(question_grams & qgrams) / len(question_grams | qgrams)
            if score > best[0]:
                best = (score, k)
    if best[0] < faq_min_similarity:  # no close wording: the FAQ question that shares the telling words
        match = next(iter(faq_index(snap).search(faq_wording(text), 1)), None)
        # and shares what is asked about, not only how (什么时候到 is not 退款多久到账？)
        if (match is not None and match.similarity >= FAQ_MIN_COSINE
                and _topic_grams(text) & _topic_grams(match.question)):
            best = (match.similarity, int(match.dialogue_id[3:]))
    # a wording match of at least FAQ_MIN_COSINE stands when the telling words find nothing better (您好，这个是正品吗:
    # bigram overlap 0.5 with 你们是正品吗？, the idf-weighted cosine below 0.5)
    if best[1] >= 0 and best[0] >= min(faq_min_similarity, FAQ_MIN_COSINE):
        entry = snap.faq[best[1]]
        faq_answer = entry.answer
        facts.append(_fact("faq", entry.intent or "faq", f"常见问题「{entry.question}」：{entry.answer}",
                           question=entry.question, answer=entry.answer, similarity=round(best[0], 3)))

    # --- what was asked, and whether the pieces answer all of it
    asked: set[str] = set()
    if about_order:
        asked.add("order")
        if fields and not PAID.search(text):
            asked.add("after_sales")  # "我的订单能退吗": the order and its return window, for the model
        if cues["price"] and not PAID.search(text):
            asked.add("price")  # "X多少钱 + an order number": two questions
    else:
        if cues["order"] and not products and not cues["price"] and not cues["promotion"]:
            asked.add("order")
        if products and (wants_price or cues["price"]):
            asked.add("price")
        elif not products and (cues["price"] or cues["promotion"] or coupons or unknown_codes):
            asked.add("promotion")
        if named:
            asked.add("promotion")
        if stock_asked:
            asked.add("stock")
        if attributes or options:
            asked.add("attribute")
        if after_sales:
            asked.add("after_sales")
    if named and products and "price" in parts and "promotion" not in parts:
        parts["promotion"] = []  # every named promotion was applied in the quoted price
    facts.sort(key=lambda f: FACT_PRIORITY.get(f["type"], 50))  # stable: keeps order inside a kind
    facts = facts[:max_facts]
    answer, pieces = None, {}
    quiet = detect(text).attack or (FOREIGN.search(text.replace(customer_id or "\0", "")) is not None)
    delay_only = exceptions == ["delay"] and orders and all(o.status not in SHIPPED_STATUSES for o in orders)
    if quiet or (exceptions and not delay_only and (orders or not parts)):
        answer = None  # an attack or an exception needs judgement (the playbook), not a canned line; without an
        # order in the turn a logistics playbook has nothing to act on ("保温杯坏了保修多久" asks the policy)
    elif parts and asked <= set(parts) and len(parts.get("order", [])) <= 1 and len(parts.get("stock", [])) <= 1:
        order_kinds = ("promotion", "price", "order", "stock", "attribute", "after_sales")
        pieces = {kind: "".join(parts[kind]) for kind in order_kinds if parts.get(kind)}
        answer = "".join(pieces.values()) or None
    elif not parts and faq_answer and not products and not orders:
        answer = faq_answer
    block = BLOCK_HEADER + "\n" + "\n".join(f"- {f['text']}" for f in facts) if facts else ""
    return Facts(entities=entities, facts=facts, prompt_block=block, answer=answer, parts=pieces)
