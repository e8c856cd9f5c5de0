"""The entity linker: one pass of a precompiled trie-shaped regex over every product name, alias, SKU, category,
brand, style and catalogue colour (longest match wins, like Aho–Corasick), built once per ``kg.version`` and cached on
the graph's snapshot, plus small regexes for sizes and colour words; order numbers (16 digits, also typed in groups) and tracking numbers
are ``kefu.text.claims``'s."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kefu.kg.store import KnowledgeGraph, Snapshot
from kefu.text import trie_regex as text_trie_regex
from kefu.text.claims import ORDER_NO, TRACKING_NO, order_numbers
from kefu.text.numbers import cn_number

# letter sizes (not the s of "what's"), shoe sizes 3x/4x and children's heights 100-190 with 码/号 (有170码吗), the
# same in Chinese numerals (四十二码, 一百七十码; not 三十号, a day of the month)
SIZE = re.compile(r"(?<![A-Za-z0-9'’])(XXXL|XXL|XL|XS|2XL|3XL|4XL|S|M|L)(?![A-Za-z])(?:码|号)?"
                  r"|(?<!\d)(3\d|4\d|1[0-9]0)(?:码|号)"
                  r"|(?<![零一二两三四五六七八九十百])(三十[二三四五六七八九]|四十[一二三四五六七八九]?|一百[一二三四五六七八九]?十)"
                  r"(?:码|号)|均码",
                  re.IGNORECASE)
# "x2" typed lowercase right after a product ("x1冲锋衣 x2") is a quantity (×2), not the product X2
LOWER_QUANTITY = re.compile(r"[x×*]\d{1,2}")
BASE_COLORS = "黑白红蓝灰绿黄粉紫橙棕咖米青"
COLOR_WORD = re.compile(rf"([{BASE_COLORS}]|卡其|藏青|藏蓝|军绿|墨绿|天蓝|深蓝|浅蓝|深灰|浅灰|酒红|玫红|橘)(?:色|的|款|颜色)")
# a bare colour character right before a size ("渔夫帽白M", "溯溪鞋黑39") or standing alone ("M码 黑 还有吗")
BARE_COLOR = re.compile(rf"([{BASE_COLORS}])(?=\s*(?:XXXL|XXL|XL|XS|[2-4]XL|S|M|L|\d{{2,3}}|均码)(?![A-Za-z]))"
                        rf"|(?<=\s)([{BASE_COLORS}])(?=\s|$|[，,。？?！!])", re.IGNORECASE)
# a bare shoe size just after a product ("峰行者 39 有货吗", "溯溪鞋黑39"): no unit after it that makes it money, a
# count or a measure, and no time or list before it (10:41, 39/40)
BARE_SHOE_SIZE = re.compile(r"(?<![\d.¥￥$:：/\-])(3[4-9]|4[0-7])(?![\d.]|\s*(?:元|块|件|个|双|条|%|折|度|℃|天|号|码|小时|cm|mm|"
                            r"kg|g|L|ml|升|克|岁|斤|公斤|分|人|年|月|日))", re.IGNORECASE)
# everyday words for a category a shop names formally: a word links to the category only when the shop has that
# category and no product or catalogue term already uses the word (the catalogue's own words win)
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "双肩包": ("背包", "包包", "旅行包"), "保温杯": ("杯子",), "登山杖": ("手杖",), "登山鞋": ("登山靴", "爬山鞋"),
    "羽绒服": ("羽绒衣", "羽绒外套"), "抓绒衣": ("抓绒外套",), "速干T恤": ("速干短袖",),
}
PUNCT = re.compile(r"[\s，。！？、,.!?~～：:；;“”\"'（）()【】\[\]…—-]+")
FILLER = re.compile(r"请问|你好|您好|亲爱的|亲|你们|咱们|麻烦|一下|呀|吗|呢|啊|哈|吧|哦|嘛|么")


def trie_regex(terms: list[str], flags: int = 0) -> re.Pattern[str] | None:
    """One compiled regex matching any of ``terms`` (trie-shaped, longest term first); None when there are none."""
    pattern = text_trie_regex(terms)
    return re.compile(pattern, flags) if pattern else None


@dataclass
class Linker:
    """The compiled pattern and what each matched term means, for one snapshot version."""

    pattern: re.Pattern[str] | None
    meanings: dict[str, list[tuple[str, str]]]  # term -> [(entity type, value)]
    faq_grams: list[tuple[str, set[str]]]
    folded: dict[str, str] = field(default_factory=dict)  # casefolded term -> the term (customers type x1 for X1)

    def term(self, matched: str) -> str | None:
        """The catalogue term a case-insensitive match stands for."""
        return matched if matched in self.meanings else self.folded.get(matched.casefold())


def grams(text: str) -> set[str]:
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
        add(p.name.replace(" ", ""), "product", p.sku)  # "X1三合一冲锋衣 男款" typed without the space
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
    categories = {p.category for p in snap.products.values()} | {c for c in snap.policies if c != "*"}
    for category, words in CATEGORY_WORDS.items():
        for word in words if category in categories else ():
            if word not in meanings:
                add(word, "category", category)
    pattern = trie_regex(sorted(meanings, key=lambda t: (-len(t), t)), re.IGNORECASE)
    folded = {}
    for term in sorted(meanings, key=lambda t: (t.casefold() != t, t)):
        folded.setdefault(term.casefold(), term)
    result = Linker(pattern, meanings, [(f.question, grams(f.question)) for f in snap.faq], folded)
    snap.cache["linker"] = result
    return result


def _ascii_word(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()


def _drop_modifiers(entities: list[dict], snap: Snapshot) -> list[dict]:
    """"美丽诺徒步袜": a product term right next to another product's term that it is part of the name of (美丽诺 in
    美丽诺中厚徒步袜) modifies that product, and one right after a product that its material or description names
    ("X1冲锋衣内胆", "316保温杯内胆") is a part of it; neither is a second product."""
    products = [e for e in entities if e["type"] == "product"]
    drop = []
    for e in products:
        for other in products:
            if other["value"] == e["value"] or not (other["start"] == e["end"] or other["end"] == e["start"]):
                continue
            target = snap.products.get(other["value"])
            if target and any(e["text"].casefold() in term.casefold() for term in [target.name, *target.aliases]):
                drop.append(e)
                break
            if target and other["end"] == e["start"] and e["text"] in target.material + target.description:
                drop.append(e)  # "X1冲锋衣内胆": a part the product's own material names, not a second product
                break
    return [e for e in entities if not any(e is d for d in drop)]


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
        value = order_numbers(m.group())[0]
        entities.append({"type": "order_no", "text": m.group(), "start": m.start(), "end": m.end(), "value": value})
        taken.append(m.span())
    for m in TRACKING_NO.finditer(text):
        if free(*m.span()):
            entities.append({"type": "logistics", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group().upper()})
            taken.append(m.span())
    if lk.pattern is not None:
        for m in lk.pattern.finditer(text):
            if not free(*m.span()):
                continue
            term = lk.term(m.group())
            if term is None:
                continue
            if m.group().isascii() and (_ascii_word(text, m.start() - 1) or _ascii_word(text, m.end())):
                continue  # inside a longer Latin word or number: "X1" in "SX12"
            if m.group() != term and LOWER_QUANTITY.fullmatch(m.group()) and any(
                    e["type"] == "product" and not text[e["end"]:m.start()].strip() and m.start() - e["end"] <= 2
                    for e in entities):
                continue  # "x1冲锋衣 x2": the quantity, not the product X2
            for kind, value in lk.meanings.get(term, []):
                entities.append({"type": kind, "text": m.group(), "start": m.start(), "end": m.end(), "value": value})
            taken.append(m.span())
    for m in COLOR_WORD.finditer(text):
        if free(*m.span()):
            entities.append({"type": "color", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group(1)})
            taken.append(m.span())
    for m in BARE_COLOR.finditer(text):
        if free(*m.span()) and any(e["type"] in ("product", "category") for e in entities):
            entities.append({"type": "color", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group(1) or m.group(2)})
            taken.append(m.span())
    for m in SIZE.finditer(text):
        if free(*m.span()):
            value = (m.group(1) or m.group(2) or (str(cn_number(m.group(3))) if m.group(3) else "均码")).upper()
            entities.append({"type": "size", "text": m.group(), "start": m.start(), "end": m.end(), "value": value})
            taken.append(m.span())
    for m in BARE_SHOE_SIZE.finditer(text):
        if free(*m.span()) and any(e["type"] in ("product", "category") and 0 <= m.start() - e["end"] <= 6
                                   for e in entities):  # close after the product it sizes
            entities.append({"type": "size", "text": m.group(), "start": m.start(), "end": m.end(),
                             "value": m.group(1)})
            taken.append(m.span())
    entities.sort(key=lambda e: (e["start"], e["end"], e["type"]))
    return _drop_modifiers(entities, snap)
