"""Direct, fully grounded replies (the light path) for what the shop's data settles: cart prices with quantities and
coupons, promotions asked about by name, product attributes quoted from the catalogue, stock by colour and size, and
after-sales windows. Every number in a reply is copied from the shop's data or computed by the promotion engine; a
builder returns None when the data does not settle the question."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from kefu.kg.promotions import CartItem, PriceResult, Promotion, price_cart, stacks
from kefu.kg.records import Policy, Product, color_matches, size_matches
from kefu.kg.store import Snapshot
from kefu.text.numbers import NUMBER, cn_number, discount_mentions, format_fen, money_mentions

# ------------------------------------------------------------------------------------------------ quantities
QTY_UNITS = "件双个只条顶根支把副套瓶盒份对"
# 三件 / 3个, x3, and a bare figure or 俩 after 买/来/拿/要 (买2送啥, 买俩) that is no amount of money
QUANTITY = re.compile(rf"(?<!第)({NUMBER})\s*[{QTY_UNITS}]|[x×*]\s*(\d{{1,2}})(?![\d.])"
                      r"|(?<=[买来拿要])\s*(\d{1,2}|俩)(?![\d.%元块钱折wW])")
CART_WORDS = re.compile(r"一共|总共|合计|总价|一起|再加|加上|共多少")
LINKED = ("product", "category", "brand", "style", "material", "color", "size", "order_no", "logistics")


def _inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


def mask(text: str, entities: list[dict]) -> str:
    """``text`` with every linked entity replaced by ``|`` (what is left is what the customer asks)."""
    spans = [(e["start"], e["end"]) for e in entities if e["type"] in LINKED]
    return "".join("|" if _inside(i, i + 1, spans) else ch for i, ch in enumerate(text))


def quantities(text: str, entities: list[dict]) -> dict[str, int]:
    """SKU → quantity the customer wants (三件, 3件, 两双, 买2个, x3): a quantity straight after a product belongs to
    it ("x1两件+速干T恤三件"), then one right before a product ("两件速干T恤"), otherwise the product named before it
    ("X1冲锋衣我要买三件")."""
    spans = [(e["start"], e["end"]) for e in entities if e["type"] in LINKED]
    products = [e for e in entities if e["type"] == "product"]
    out: dict[str, int] = {}
    for m in QUANTITY.finditer(mask(text, entities)):  # "x1两件": the model name's digit is not part of 两
        if _inside(m.start(), m.end(), spans):
            continue  # 三双装 in a product name, 2人 in a size
        n = cn_number(m.group(1) or m.group(3)) if m.group(1) or m.group(3) else int(m.group(2))
        if not n or n > 99:
            continue
        right_after = [e for e in products if 0 <= m.start() - e["end"] <= 1 and not text[e["end"]:m.start()].strip()]
        after = [e for e in products if 0 <= e["start"] - m.end() <= 1]
        before = [e for e in products if e["end"] <= m.start()]
        # "x1两件+速干T恤三件": a quantity straight after a product is that product's, before one right before the next
        target = right_after[0] if right_after else after[0] if after else before[-1] if before else next(
            (e for e in products if e["start"] >= m.end()), None)
        if target is not None:
            out.setdefault(target["value"], n)
    return out


# --------------------------------------------------------------------------------------- promotions and coupons
CODE_LIKE = re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{4,16}(?![A-Za-z0-9])")
COUPON_WORD = re.compile(r"券|优惠码|兑换码|折扣码|券码")
RULE = re.compile(rf"(每)?满\s*({NUMBER})\s*(?:元|块)?\s*减\s*({NUMBER})")
PROMOTION_WORDS = re.compile(r"活动|优惠|满减|促销|折|减|券|秒杀|清仓|赠|送|大促|还有吗|结束|开始|能用|可以用")
CN_RUN = re.compile(r"[零〇一二两三四五六七八九十百千]{2,}")
TOKEN = re.compile(r"\d+|[A-Za-z]+|[^\W\d_]")


def day(dt: datetime, at: datetime) -> str:
    """11月30日 23:59 (with the year when it is not ``at``'s)."""
    year = f"{dt.year}年" if dt.year != at.year else ""
    return f"{year}{dt.month}月{dt.day}日 {dt:%H:%M}"


def rule(p: Promotion) -> str:
    """The rule as ``Promotion.rule_text`` writes it, with a cap written as money (最多减¥100.00)."""
    text = p.rule_text()
    if p.type == "per_full_reduction" and p.cap_fen is not None:
        text = text.replace(f"最多减{format_fen(p.cap_fen, short=True)}", f"最多减¥{format_fen(p.cap_fen)}")
    return text


def promotion_line(p: Promotion, at: datetime) -> str:
    """What a promotion is and whether it runs at ``at``: 正在进行 / 已于…结束 / 还没开始."""
    if p.starts_at > at:
        return f"「{p.name}」（{rule(p)}）还没开始：{day(p.starts_at, at)}开始，{day(p.ends_at, at)}结束，现在还不能用"
    if p.ends_at < at:
        return f"「{p.name}」（{rule(p)}）已于{day(p.ends_at, at)}结束，现在不能用了"
    exclusive = "，不与其他优惠同享" if p.exclusive else ""
    note = f"；{p.description}" if p.description else ""
    return (f"「{p.name}」正在进行：{rule(p)}，范围{p.scope_text()}{exclusive}，"
            f"活动时间{day(p.starts_at, at)}至{day(p.ends_at, at)}{note}")


# asked whether promotions go together; with two or more named, "秒杀的帐篷能用新人券吗" asks it too
STACK_ASKED = re.compile(r"一起(?:用|享|参加|使用)|[能可以]一起|一块用|同时用|同时享|叠加|同享|共用|都能用|再用|还能用|"
                         r"能用|可以用|可用")  # not 一起买/一起拍: that is a cart


def stacking_line(promotions: list[Promotion]) -> str | None:
    """"满300减50和八五折能一起用吗": whether the named promotions apply together (the engine's stacking rule:
    an exclusive one applies alone, one per stack group); None for fewer than two."""
    promotions = list(dict.fromkeys(promotions))
    if len(promotions) < 2:
        return None
    names = "和".join(f"「{p.name}」" for p in promotions)
    if stacks(promotions):
        return f"{names}可以叠加：先打折，再按折后金额算满减，最后用券（以各自的适用范围为准）"
    exclusive = next((p for p in promotions if p.exclusive), None)
    if exclusive is not None:
        return f"「{exclusive.name}」不与其他优惠同享，{names}不能叠加，只能用其中一个"
    return f"{names}不能叠加，同类优惠一单只能用一个，结算时按更划算的计算"


def _tokens(text: str) -> list[str]:
    text = CN_RUN.sub(lambda m: str(cn_number(m.group())) if cn_number(m.group()) is not None else m.group(), text)
    return TOKEN.findall(text.upper())


def _bigrams(text: str) -> set[str]:
    out: set[str] = set()
    for piece in re.split(r"[^\w]+|_", text):
        tokens = _tokens(piece)
        out |= {a + b for a, b in zip(tokens, tokens[1:])}
    return out


def _distinctive(snap: Snapshot) -> dict[str, set[str]]:
    """Promotion id → bigrams of its name found in no other promotion's name and nowhere in the catalogue (双11, 国庆,
    年货, 秒杀, 新人 …), cached on the snapshot."""
    cached = snap.cache.get("promotion_grams")
    if cached is not None:
        return cached
    background: set[str] = set()
    for p in snap.products.values():
        for text in (p.name, p.category, p.description, p.material, p.style, *p.aliases):
            background |= _bigrams(text)
    names = {p.id: _bigrams(p.name) for p in snap.promotions}
    out = {}
    for pid, grams in names.items():
        others = set().union(*(g for other, g in names.items() if other != pid)) if len(names) > 1 else set()
        out[pid] = {g for g in grams if g not in others and g not in background}
    snap.cache["promotion_grams"] = out
    return out


def coupons_named(snap: Snapshot, text: str, entities: list[dict]) -> tuple[list[Promotion], list[str]]:
    """Coupons whose code is in ``text`` (case-insensitive), and code-like words next to 券/码 that are no code."""
    known = {p.code.upper(): p for p in snap.promotions if p.type == "coupon" and p.code}
    spans = [(e["start"], e["end"]) for e in entities if e["type"] in LINKED]
    found: list[Promotion] = []
    unknown: list[str] = []
    if known:
        # "NEW 10", "slhw-30": a space or dash where the letters meet the digits
        alternatives = "|".join(re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", r"[ -]?", re.escape(c))
                                for c in sorted(known, key=len, reverse=True))
        for m in re.finditer(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", text, re.IGNORECASE):
            p = known[re.sub(r"[ -]", "", m.group()).upper()]
            if p not in found:
                found.append(p)
            spans.append(m.span())
    if COUPON_WORD.search(text):
        for m in CODE_LIKE.finditer(text):
            if not _inside(m.start(), m.end(), spans) and m.group() not in unknown:
                unknown.append(m.group())
    return found, unknown


def promotions_named(snap: Snapshot, text: str, entities: list[dict]) -> list[Promotion]:
    """Promotions the customer names: by a word only its name has (双11, 国庆, 年货节, 秒杀), by its rule (满300减40,
    每满200减20, 六折) or by its coupon code."""
    rest = mask(text, entities)
    grams = _bigrams(rest)
    distinctive = _distinctive(snap)
    # one word of a name ("出游") names the promotion only when the turn is about promotions at all
    about = PROMOTION_WORDS.search(rest) is not None
    named = [p for p in snap.promotions if len(hits := distinctive.get(p.id, set()) & grams) >= 2 or (hits and about)]
    for m in RULE.finditer(rest):
        threshold, reduction = cn_number(m.group(2)), cn_number(m.group(3))
        if threshold is None or reduction is None:
            continue
        pair = (threshold * 100, reduction * 100)
        for p in snap.promotions:
            if (pair in p.tiers or (p.type == "per_full_reduction" and pair == (p.per_threshold_fen, p.per_reduction_fen))
                    or (p.type == "coupon" and pair == (p.threshold_fen, p.reduction_fen))) and p not in named:
                named.append(p)
    for _, _, rate in discount_mentions(rest):
        named += [p for p in snap.promotions if p.type == "discount" and p.rate_percent == rate and p not in named]
    named += [p for p in coupons_named(snap, text, entities)[0] if p not in named]
    return named


# ---------------------------------------------------------------------------------------------------- prices
@dataclass
class Quote:
    """A priced cart: the engine's result and the reply line."""

    result: PriceResult
    text: str


def _names(snap: Snapshot, result: PriceResult) -> tuple[list[str], str]:
    used = [a.name + (f"（券码{p.code}）" if (p := _promotion(snap, a.id)) and p.type == "coupon" else "")
            for a in result.applied if a.type != "gift"]
    gifts = []
    for g in result.gifts:
        gift = snap.products.get(g.sku)
        gifts.append(f"{gift.name if gift else g.sku}×{g.quantity}")
    return used, ("，另赠" + "、".join(gifts)) if gifts else ""


def _promotion(snap: Snapshot, pid: str) -> Promotion | None:
    return next((p for p in snap.promotions if p.id == pid), None)


def quote(snap: Snapshot, cart: list[tuple[Product, int]], at: datetime, coupons: list[Promotion] = ()) -> Quote:
    """Price ``cart`` at ``at`` under every promotion in force (coupons when presented) and say it in one line:
    list price × quantity, the promotions applied, the total payable and the gifts."""
    items = [CartItem(p.sku, q, p.price_fen, p.category) for p, q in cart]
    result = price_cart(items, snap.promotions, at, {c.code for c in coupons if c.code})
    used, gifts = _names(snap, result)
    if len(cart) == 1 and cart[0][1] == 1:
        product = cart[0][0]
        if used:
            line = f"「{product.name}」标价¥{format_fen(product.price_fen)}，单件按当前活动（{'、'.join(used)}）到手¥{format_fen(result.payable_fen)}"
        else:
            line = f"「{product.name}」标价¥{format_fen(product.price_fen)}，单件买暂无可用的减价活动"
    else:
        heads = "、".join(f"「{p.name}」¥{format_fen(p.price_fen)}×{q}" for p, q in cart)
        line = f"{heads}，原价合计¥{format_fen(result.total_fen)}，" + (
            f"按当前活动（{'、'.join(used)}）到手¥{format_fen(result.payable_fen)}" if used
            else f"暂无可用的减价活动，合计¥{format_fen(result.payable_fen)}")
    return Quote(result, line + gifts)


def coupon_notes(snap: Snapshot, coupons: list[Promotion], unknown: list[str], cart: list[tuple[Product, int]],
                 result: PriceResult | None, at: datetime) -> list[str]:
    """Why a presented coupon does not count: unknown, expired, not started, not for these items, not stackable, or
    under its threshold."""
    notes = [f"券码{code}未查到，无法使用" for code in unknown]
    applied = {a.id for a in result.applied} if result else set()
    chosen = [p for p in snap.promotions if p.id in applied]
    for c in coupons:
        if c.id in applied:
            continue
        if c.ends_at < at:
            notes.append(f"券{c.code}已于{day(c.ends_at, at)}过期，不能再用")
        elif c.starts_at > at:
            notes.append(f"券{c.code}{day(c.starts_at, at)}才开始，现在还不能用")
        elif result is None:
            continue
        elif not any(c.eligible(p.sku, p.category) for p, _ in cart):
            notes.append(f"券{c.code}不适用于所选商品（限{c.scope_text()}）")
        elif (exclusive := next((p for p in chosen if p.exclusive), None)) is not None:
            notes.append(f"「{exclusive.name}」不与其他优惠同享，券{c.code}不能叠加，已按更划算的「{exclusive.name}」计算")
        elif (rival := next((p for p in chosen if c.stack_group and p.stack_group == c.stack_group), None)) is not None:
            notes.append(f"券{c.code}和{rival.code or rival.name}不能叠加，一单只能用一张，已按更划算的{rival.code or rival.name}计算")
        else:
            notes.append(f"券{c.code}需满¥{format_fen(c.threshold_fen)}才能用，这单未达到使用门槛")
    return notes


def amount_quote(snap: Snapshot, text: str, at: datetime) -> str | None:
    """"我购物车350块钱的东西，满减能减多少": an amount without products, priced under the shop-wide promotions."""
    amounts = money_mentions(text)
    if len(amounts) != 1:
        return None
    fen = amounts[0][2]
    shop_wide = [p for p in snap.promotions if p.eligible_all and p.type != "coupon" and p.active(at)]
    if not shop_wide:
        return None
    result = price_cart([CartItem("", 1, fen, "")], shop_wide, at)
    reductions = [a for a in result.applied if a.saved_fen > 0]
    if not reductions:
        rules = "；".join(f"「{p.name}」{rule(p)}" for p in shop_wide if p.type != "gift")
        return f"¥{format_fen(fen)}暂未达到全店满减门槛（{rules}）。" if rules else None
    used = "、".join(f"「{a.name}」（{rule(_promotion(snap, a.id))}）减¥{format_fen(a.saved_fen)}" for a in reductions)
    return (f"按全店活动，¥{format_fen(fen)}可享{used}，实付¥{format_fen(result.payable_fen)}；"
            f"部分品类另有专属活动，以实际商品结算为准。")


# ----------------------------------------------------------------------------------------------- attributes
CLAUSE = re.compile(r"[，,；;。]")
# what is asked → (question words, clause pattern or a field name)
ATTRIBUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("防水", re.compile(r"防水|下雨|淋雨|防雨|漏水|(?i:waterproof|rain)"), r"防水|防泼水|防雨"),
    ("透气", re.compile(r"透气|透湿|闷不闷|捂汗|(?i:breathab)"), r"透气|透湿"),
    ("面料", re.compile(r"面料|材质|材料|什么料|啥料|什么做的|啥做的|成分|纯[^，。？?\s]{0,4}[的吗]|什么皮|啥皮|什么钢|啥钢|"
                          r"[什啥]么?绒|鸭绒|鹅绒|克重|(?i:material|fabric)"), "material"),
    ("重量", re.compile(r"(?<![背扛承载])多重|重量|重多少|多少重|多沉|沉不沉|重不重|几斤|多少斤|轻不轻|"
                          r"(?<!绒)(?<!绒量)(?:多少克|几克)|(?i:weigh|heavy)"), "weight"),  # not 充绒量多少克
    ("负重", re.compile(r"负重|承重|[背扛承载](?:多重|多少斤|多少公斤|得动)"), r"负重|承重"),
    ("长度", re.compile(r"(?<![期间])多长(?!时间)|长度|折起来"), r"长度|\d(?:cm|厘米)"),
    ("容量", re.compile(r"(?<!大)容量|(?<!围)多大|装多少|能装|几升|多少升|多少毫升|多少ml|几种容量|(?i:capacity|how many lit)"), "capacity"),
    ("保暖", re.compile(r"保暖|蓬松|充绒|含绒|多少度|几度|温度|冷不冷|扛冻"), r"蓬松|充绒|绒|℃|温度|保暖"),
    ("版型", re.compile(r"版型|修身|宽松|偏大|偏小|尺码建议|码数建议|怎么选码|选码|显瘦|收腰|楦"), r"版型|修身|收腰|宽松|楦|选码|偏大|偏小"),
    ("防晒", re.compile(r"防晒|紫外线|UPF|晒不晒", re.IGNORECASE), r"防晒|UPF"),
    ("保温", re.compile(r"保温(?:多久|多长|时间|时长|效果|几个?小时|吗|怎么样|好不好)|能保温|保温性"), r"保温"),
    ("电脑", re.compile(r"电脑|笔记本|几寸|多少寸|英寸"), r"电脑|英寸"),
    ("厚度", re.compile(r"多厚|厚度|厚不厚"), r"\d(?:\.\d+)?mm|加厚|厚"),
]
WEIGHT = re.compile(r"\d(?:\.\d+)?\s*(?:kg|g|克|公斤)(?!/㎡)", re.IGNORECASE)
CAPACITY = re.compile(r"^\d+(?:\.\d+)?(?:\+\d+)?\s*(?:L|ml|升|毫升)$", re.IGNORECASE)
_WHICH = r"(?:几种|几个|哪几种|哪几个?|哪些|什么|多少种|多少个|啥)"  # 有几个码 / 哪几种颜色 (not 穿几码: advice)
OPTIONS = {"颜色": re.compile(rf"{_WHICH}颜色|颜色(?:有哪些|有几种|都有)|几个色|哪几个?色"),
           "尺码": re.compile(rf"{_WHICH}(?:尺码|码|号)|尺码(?:有哪些|有几种|都有|齐)|头围")}


def attributes_asked(text: str) -> list[str]:
    return [name for name, ask, _ in ATTRIBUTES if ask.search(text)]


def options_asked(text: str) -> list[str]:
    return [name for name, rx in OPTIONS.items() if rx.search(text)]


def _clauses(text: str) -> list[str]:
    return [c.strip() for c in CLAUSE.split(text) if c.strip()]


def attribute_clauses(product: Product, name: str) -> list[str]:
    """The product's own words about one attribute (description and material clauses), copied as they are."""
    where = next(w for n, _, w in ATTRIBUTES if n == name)
    if where == "material":
        return [product.material] if product.material else []
    if where == "weight":
        return [c for c in _clauses(product.description) if WEIGHT.search(c) and not re.search(r"负重|充绒|克重", c)]
    if where == "capacity":
        sizes = [s for s in product.sizes if CAPACITY.match(s)]
        return ["/".join(sizes)] if sizes else []
    rx = re.compile(where, re.IGNORECASE)
    clauses = [c for c in _clauses(product.description) + _clauses(product.material) if rx.search(c)]
    if name == "厚度":
        clauses = [c for c in clauses if "防水指数" not in c]
    if name == "长度" and not clauses and any("cm" in s for s in product.sizes):
        clauses = ["/".join(product.sizes)]
    return list(dict.fromkeys(clauses))


def attribute_answer(product: Product, asked: list[str], options: list[str]) -> str | None:
    """Every asked attribute quoted from the product's fields; None when the data is silent on one of them."""
    said: dict[str, list[str]] = {}  # the quoted words -> the attributes they answer (面料 and 厚度 may share one)
    for name in asked:
        clauses = attribute_clauses(product, name)
        if not clauses:
            return None
        said.setdefault("，".join(clauses), []).append(name)
    parts = [f"{'/'.join(names)}：{words}" for words, names in said.items()]
    for name in options:
        values = product.colors if name == "颜色" else product.sizes
        if not values:
            return None
        parts.append(f"{name}可选{'/'.join(values)}")
    return f"「{product.name}」" + "；".join(parts) + "。" if parts else None


# ---------------------------------------------------------------------------------------------------- stock
def stock_answer(snap: Snapshot, product: Product, colors: list[str], sizes: list[str]) -> str:
    """有货（N件）/缺货 for the asked colour and size (per variant when the catalogue has it), with what is in stock
    instead."""
    head = f"「{product.name}」"
    missing = []
    for color in colors:
        if not any(color_matches(color, c) for c in product.colors):
            missing.append(f"没有{color.rstrip('色的款')}色（可选颜色：{'/'.join(product.colors) or '无'}）")
    for size in sizes:
        if not any(size_matches(size, s) for s in product.sizes):
            missing.append(f"没有{size}码（可选尺码：{'/'.join(product.sizes) or '均码'}）")
    if missing:
        line = head + "，".join(missing)
        return line + ("；该款目前有货。" if product.stock > 0 else "；该款目前缺货。")
    if product.variant_stock and (colors or sizes):
        matched = []
        for key, units in sorted(product.variant_stock.items()):
            color, _, size = key.partition("/")
            if (not colors or any(color_matches(c, color) for c in colors)) and (
                    not sizes or any(size_matches(s, size) for s in sizes)):
                matched.append((key, units))
        if matched:
            line = "；".join(f"{head}{key}：" + (f"库存{units}件" if units > 0 else "缺货") for key, units in matched)
            if all(units <= 0 for _, units in matched):
                others = [f"{key}（{units}件）" for key, units in sorted(product.variant_stock.items()) if units > 0]
                line += "；有货的还有：" + "、".join(others[:6]) if others else "；该款其他颜色尺码也都缺货"
            return line + "。"
    picked = "、".join([c for c in product.colors if any(color_matches(q, c) for q in colors)]
                      + [f"{s}码" for s in product.sizes if any(size_matches(q, s) for q in sizes)])
    if product.stock > 0:
        return f"{head}{'有' + picked + '，' if picked else ''}目前有货（库存{product.stock}件）。"
    line = f"{head}目前缺货"
    alternatives = []
    for relation, other, _ in snap.related(product.sku):
        target = snap.products.get(other)
        if relation == "alternative-to" and target and target.stock > 0 and target not in alternatives:
            alternatives.append(target)
    if alternatives:
        line += "，可以看看有货的" + "、".join(f"{t.sku}「{t.name}」¥{format_fen(t.price_fen)}" for t in alternatives[:2])
    return line + "。"


# ---------------------------------------------------------------------------------------------- after-sales
POLICY_FIELDS = {
    "exchange": re.compile(r"换货|能换|可以换|可换|换吗|换码|换尺码|换个|换一|退换|调换"),
    "return": re.compile(r"退货|能退|可以退|可退|退吗|退不退|无理由|退回"),
    "repair": re.compile(r"保修|维修|能修|修理|返修|质保"),
    "shipping": re.compile(r"运费|邮费|快递费|谁出|谁付|谁承担"),
}
ACTION_WORDS = ("拆", "穿", "洗", "用过", "戴过")  # what the customer did: read from the question only
KIND_WORDS = ("定制", "刻字", "刺绣", "印字", "logo", "贴身", "内裤")  # what the item is: the question or the product


def policy_fields(text: str) -> list[str]:
    """Which after-sales facts are asked (运费 only about returns and exchanges, not delivery)."""
    return [name for name, rx in POLICY_FIELDS.items()
            if rx.search(text) and (name != "shipping" or re.search(r"退|换", text))]


def applicable_exceptions(policy: Policy, text: str, products: list[Product]) -> list[str]:
    """The 7天无理由 exceptions the question or the product is about (拆封的袜子, 刻字的杯子, 定制刺绣款): one about a
    kind of item (内裤, 定制, 刻字 …) applies only to that kind, named in the question or the product ("速干T恤拆了吊牌"
    is no 贴身衣物); one about what was done (拆, 穿, 洗) applies when the question says it."""
    about = text + "".join(p.name + p.description for p in products)
    out = []
    for e in policy.exceptions:
        kinds = [w for w in KIND_WORDS if w in e]
        if (any(w in about for w in kinds) if kinds else any(w in e and w in text for w in ACTION_WORDS)):
            out.append(e)
    return out


def policy_answer(snap: Snapshot, categories: list[str], text: str, products: list[Product]) -> str | None:
    """The category's windows and rules (exceptions that apply first); without a category, only what every category
    has in common (运费谁出)."""
    fields = policy_fields(text)
    if len(set(categories)) == 1:
        policy = snap.policy(categories[0])
        if policy is None:
            return None
        label = categories[0]
        lead = "；".join(applicable_exceptions(policy, text, products))
        return (f"{lead}。" if lead else "") + f"{label}商品{policy.summary()}。"
    if categories or not fields:
        return None
    policies = list(snap.policies.values())
    if not policies:
        return None
    values = {"exchange": {p.exchange_days for p in policies}, "return": {(p.return_days, p.seven_day_no_reason)
                                                                            for p in policies},
              "repair": {p.repair_days for p in policies}, "shipping": {p.shipping_paid_by for p in policies}}
    if any(len(values[f]) != 1 for f in fields):
        return None  # it depends on the category: the model asks which
    first = policies[0]
    parts = {"exchange": f"{first.exchange_days}天内可换货",
             "return": (f"支持{first.return_days}天无理由退货" if first.seven_day_no_reason
                        else f"{first.return_days}天内可退货（不支持无理由）"),
             "repair": f"{first.repair_days}天内保修" if first.repair_days else "不提供保修",
             "shipping": f"退换货运费：{first.shipping_paid_by}"}
    line = "全店商品" + "，".join(parts[f] for f in fields)
    if "return" in fields:
        excluded = list(dict.fromkeys(e for p in policies for e in p.exceptions))
        line += ("（例外：" + "；".join(excluded) + "）") if excluded else ""
    return line + "。"
