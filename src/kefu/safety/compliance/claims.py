"""Promotion claims in a reply (满X减Y, 每满X减Y, N折) checked against the shop's active promotions; numbers and
discounts are read by the shared parser (``kefu.text.numbers``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from kefu.safety.compliance.violation import ART_PRICE, Violation
from kefu.text.numbers import discount_mentions, format_fen, parse_money_fen

# An amount is all Arabic or all Chinese numerals (满三百减五十8.5折 is 满300减50 and 8.5折, not 减58.5).
_NUM = r"\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千万]+"
_FULL_RE = re.compile(rf"(每)?满\s*({_NUM})\s*(?:元|块)?\s*(?:立减|减|-|－)\s*({_NUM})\s*(?:元|块)?")


@dataclass(frozen=True)
class PromotionClaim:
    """A parsed claim: kind 'full' (满X减Y), 'per' (每满X减Y) or 'discount' (N折, rate in percent)."""

    kind: str
    threshold_fen: int = 0
    reduction_fen: int = 0
    rate_percent: int = 0

    def describe(self) -> str:
        if self.kind == "discount":
            rate = self.rate_percent / 10
            return f"{rate:g}折"
        prefix = "每满" if self.kind == "per" else "满"
        return f"{prefix}{format_fen(self.threshold_fen, short=True)}减{format_fen(self.reduction_fen, short=True)}"


def parse_promotion_claims(text: str) -> list[tuple[int, int, PromotionClaim]]:
    """Every 满X减Y / 每满X减Y / N折 claim in ``text`` as (start, end, claim); amounts become fen."""
    found = []
    for m in _FULL_RE.finditer(text):
        threshold, reduction = parse_money_fen(m.group(2)), parse_money_fen(m.group(3))
        if threshold is not None and reduction is not None:
            found.append((m.start(), m.end(), PromotionClaim("per" if m.group(1) else "full", threshold, reduction)))
    for start, end, rate in discount_mentions(text):
        found.append((start, end, PromotionClaim("discount", rate_percent=rate)))
    return sorted(found, key=lambda item: item[0])


def active_claims(promotions: Iterable[dict[str, Any]]) -> list[PromotionClaim]:
    """The claims the shop's active promotions support: their structured fields plus their descriptions."""
    claims: list[PromotionClaim] = []
    for promo in promotions:
        if not isinstance(promo, dict):
            continue
        kind = promo.get("type")
        for tier in promo.get("tiers") or []:
            if isinstance(tier, dict) and "threshold_fen" in tier and "reduction_fen" in tier:
                claims.append(PromotionClaim("per" if kind == "per_full_reduction" else "full",
                                             int(tier["threshold_fen"]), int(tier["reduction_fen"])))
        if "per_threshold_fen" in promo and "per_reduction_fen" in promo:
            claims.append(PromotionClaim("per", int(promo["per_threshold_fen"]), int(promo["per_reduction_fen"])))
        if kind == "coupon" and "threshold_fen" in promo and "reduction_fen" in promo:
            claims.append(PromotionClaim("full", int(promo["threshold_fen"]), int(promo["reduction_fen"])))
        if "rate_percent" in promo:
            claims.append(PromotionClaim("discount", rate_percent=int(promo["rate_percent"])))
        claims.extend(claim for _, _, claim in parse_promotion_claims(str(promo.get("description") or "")))
    return claims


def _supported(claim: PromotionClaim, allowed: list[PromotionClaim]) -> bool:
    if claim in allowed:
        return True
    # "满300减50" understates "每满300减50" but is true at 300; the reverse is not.
    return claim.kind == "full" and PromotionClaim("per", claim.threshold_fen, claim.reduction_fen) in allowed


def _promotion_hits(text: str, promotions: list[dict[str, Any]]) -> list[Violation]:
    allowed = active_claims(promotions)
    descriptions = "，".join(str(p.get("description")) for p in promotions if isinstance(p, dict)
                            and p.get("description"))
    hits = []
    for start, end, claim in parse_promotion_claims(text):
        if _supported(claim, allowed):
            continue
        same_threshold = [a for a in allowed if a.kind == claim.kind and claim.kind != "discount"
                          and a.threshold_fen == claim.threshold_fen]
        if same_threshold:
            suggestion = same_threshold[0].describe()
        elif descriptions:
            suggestion = f"当前活动（{descriptions}）"
        else:
            suggestion = "优惠（以活动页面为准）"
        hits.append(Violation("promotion-mismatch", "promotion", ART_PRICE, start, end, text[start:end], suggestion))
    return hits

