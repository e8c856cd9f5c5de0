"""Explainable product recommendation: score on the attributes the customer asked for, then re-rank with maximal
marginal relevance (MMR) so the list spreads across brands, styles and price bands instead of near-duplicates.

Every recommendation carries its reasons in Chinese (matches colour / size / category / budget / style …) and, when
it was picked partly for variety, what it adds (another brand, another style, another price band).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable

from kefu.kg.records import Product, color_matches, size_matches
from kefu.kg.store import KnowledgeGraph, Snapshot
from kefu.text.numbers import format_fen as yuan

WEIGHTS = {"category": 0.30, "color": 0.20, "size": 0.20, "price": 0.15, "style": 0.15, "material": 0.10,
           "brand": 0.10, "keyword": 0.10}


@dataclass
class Recommendation:
    product: Product
    score: float  # the MMR score it was picked with
    relevance: float  # 0..1: share of the requested attributes it matches
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = self.product
        return {"sku": p.sku, "name": p.name, "category": p.category, "brand": p.brand, "price": yuan(p.price_fen),
                "price_fen": p.price_fen, "style": p.style, "colors": p.colors, "sizes": p.sizes, "stock": p.stock,
                "relevance": round(self.relevance, 3), "reasons": self.reasons}


def price_band(price_fen: int) -> int:
    """Bands a factor of 1.6 apart (¥100, ¥160, ¥256 …): two prices in one band feel alike to a customer."""
    return int(math.log(max(price_fen, 100) / 100, 1.6))


def similarity(a: Product, b: Product) -> float:
    """How alike two products look in a list: brand 0.4, style 0.3, price band 0.2, same category and material 0.1."""
    return (0.4 * (a.brand == b.brand) + 0.3 * (a.style == b.style) + 0.2 * (price_band(a.price_fen) == price_band(
        b.price_fen)) + 0.1 * (a.category == b.category and a.material == b.material))


def _relevance(p: Product, category, color, size, min_price_fen, max_price_fen, style, material, brand,
               keyword, explain: bool = False) -> tuple[float, list[str]]:
    """Share of the asked attributes ``p`` matches; the Chinese reasons only when ``explain`` (formatting them for
    every candidate would cost more than the scoring)."""
    asked = got = 0.0
    reasons: list[str] = []
    if category:
        asked += WEIGHTS["category"]
        if p.category == category:
            got += WEIGHTS["category"]
            if explain:
                reasons.append(f"品类：{p.category}")
    if color:
        asked += WEIGHTS["color"]
        found = [c for c in p.colors if color_matches(color, c)]
        if found:
            got += WEIGHTS["color"]
            if explain:
                reasons.append(f"有{'/'.join(found)}")
    if size:
        asked += WEIGHTS["size"]
        found = [s for s in p.sizes if size_matches(size, s)]
        if found:
            got += WEIGHTS["size"]
            if explain:
                reasons.append(f"有{found[0]}码")
    if min_price_fen is not None or max_price_fen is not None:
        asked += WEIGHTS["price"]
        lo = min_price_fen or 0
        hi = max_price_fen if max_price_fen is not None else 10**12
        if lo <= p.price_fen <= hi:
            got += WEIGHTS["price"]
            if explain:
                budget = (f"¥{yuan(lo)}–¥{yuan(hi)}" if min_price_fen is not None and max_price_fen is not None
                          else f"≤¥{yuan(hi)}" if max_price_fen is not None else f"≥¥{yuan(lo)}")
                reasons.append(f"¥{yuan(p.price_fen)}在预算内（{budget}）")
    if style:
        asked += WEIGHTS["style"]
        if style in p.style:
            got += WEIGHTS["style"]
            if explain:
                reasons.append(f"风格：{p.style}")
    if material:
        asked += WEIGHTS["material"]
        if material.lower() in p.material.lower():
            got += WEIGHTS["material"]
            if explain:
                reasons.append(f"材质：{p.material}")
    if brand:
        asked += WEIGHTS["brand"]
        if p.brand == brand:
            got += WEIGHTS["brand"]
            if explain:
                reasons.append(f"品牌：{p.brand}")
    if keyword:
        asked += WEIGHTS["keyword"]
        if keyword in p.name or keyword in p.description or keyword in p.aliases:
            got += WEIGHTS["keyword"]
            if explain:
                reasons.append(f"符合「{keyword}」")
    return (got / asked if asked else 0.5), reasons


def recommend(kg: KnowledgeGraph, *, category: str | None = None, color: str | None = None, size: str | None = None,
              min_price_fen: int | None = None, max_price_fen: int | None = None, style: str | None = None,
              material: str | None = None, brand: str | None = None, keyword: str | None = None,
              exclude_skus: Iterable[str] = (), in_stock_only: bool = True, limit: int = 5,
              lambda_: float = 0.6, snapshot: Snapshot | None = None) -> list[Recommendation]:
    """Up to ``limit`` products for the asked attributes, diverse by MMR (``lambda_`` 1 = relevance only).

    Category and budget are hard filters (a customer asking for 冲锋衣 under ¥400 wants nothing else); the other
    attributes score. Out-of-stock items are left out unless ``in_stock_only=False``. Deterministic: ties by SKU.
    """
    excluded = set(exclude_skus)
    asked = (category, color, size, min_price_fen, max_price_fen, style, material, brand, keyword)
    pool = []
    snap = snapshot or kg.snapshot()
    by_category = snap.cache.get("by_category")
    if by_category is None:
        by_category = {}
        for p in snap.products.values():
            by_category.setdefault(p.category, []).append(p)
        snap.cache["by_category"] = by_category
    for p in (by_category.get(category, []) if category else snap.products.values()):
        if p.sku in excluded or (in_stock_only and p.stock <= 0):
            continue
        if max_price_fen is not None and p.price_fen > max_price_fen:
            continue
        if min_price_fen is not None and p.price_fen < min_price_fen:
            continue
        rel, _ = _relevance(p, *asked)
        stock_bonus = 0.01 * min(p.stock, 999) / 999  # breaks ties towards what can ship
        pool.append((rel + stock_bonus, rel, p))
    pool = heapq.nsmallest(max(50, limit * 10), pool, key=lambda t: (-t[0], t[2].sku))  # MMR over the best candidates only: O(k × pool)
    chosen: list[Recommendation] = []
    while pool and len(chosen) < limit:
        best_i, best_score = 0, -math.inf
        for i, (rel_b, _, p) in enumerate(pool):
            penalty = max((similarity(p, c.product) for c in chosen), default=0.0)
            score = lambda_ * rel_b - (1 - lambda_) * penalty
            if score > best_score + 1e-12:
                best_i, best_score = i, score
        rel_b, rel, p = pool.pop(best_i)
        reasons = _relevance(p, *asked, explain=True)[1]
        if chosen:
            if all(c.product.brand != p.brand for c in chosen):
                reasons.append(f"换个品牌：{p.brand}")
            if p.style and all(c.product.style != p.style for c in chosen):
                reasons.append(f"换种风格：{p.style}")
            if all(price_band(c.product.price_fen) != price_band(p.price_fen) for c in chosen):
                reasons.append("不同价位")
        if not reasons:
            reasons.append(f"{p.category}，在售有货" if p.stock > 0 else p.category)
        chosen.append(Recommendation(p, round(best_score, 6), rel, reasons))
    return chosen
