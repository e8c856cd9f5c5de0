"""Promotion claims in a reply (满X减Y, 每满X减Y, N折) checked against the shop's promotions in force; numbers and
discounts are read by the shared parser (``kefu.text.numbers``).

A promotion is in force only when ``starts_at <= now <= ends_at`` (``now``: the shop clock, ``kefu.clock.shop_now``,
unless given; a promotion without dates is always in force). A claim only an expired promotion supports is
``promotion-expired``, one only a future promotion supports ``promotion-not-started`` — unless its sentence says so
(已于…结束 / 已过期 / 还没开始 / 12月1日起 …: the light path's own wording), since then it is not a claim that the offer
runs now (a claim no promotion backs is excused only by an explicit 已结束 / 还没开始 / 12月1日起, so a caller that
passes only the promotions in force still lets a reply name an ended offer as ended). Pass every promotion to the
check so dates are judged here; ``promotions_in_force`` is the filter for what the model is shown as current.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from kefu.clock import parse_time, shop_now
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


IN_FORCE, EXPIRED, NOT_STARTED = "in_force", "expired", "not_started"
# A sentence that says the offer is over / not yet on is not a claim that it runs now.
_SAYS_EXPIRED = re.compile(r"结束|过期|失效|截止了|下线|不能用|不能再用|用不了|不可用|无法使用|不再")
_SAYS_NOT_STARTED = re.compile(r"还没开始|没开始|未开始|尚未开始|才开始|开始|即将|届时|到时候|还不能用|预告|预热|"
                               r"\d{1,2}\s*月\s*\d{1,2}\s*[日号]\s*(?:起|后)")
# The same, strictly: a claim no promotion backs (the caller may have passed only the promotions in force) is excused
# only by an explicit 已结束 / 还没开始 / 12月1日起.
_SAYS_OVER_STRICT = re.compile(r"已经?结束|结束了|已于.{0,20}结束|已经?过期|过期了|已经?失效|不能再用|不能用了|用不了了|"
                               r"还没开始|没开始|未开始|尚未开始|才开始|\d{1,2}\s*月\s*\d{1,2}\s*[日号]\s*起")
_SENTENCE_END = "。！？；!?;\n"


def _when(value: Any, promo: Any, field_name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    ident = promo.get("id") if isinstance(promo, dict) else getattr(promo, "id", "?")
    return parse_time(str(value), f"promotion {ident} {field_name}")


def promotion_state(promo: Any, now: datetime | None = None) -> str:
    """``in_force`` / ``expired`` / ``not_started`` for a promotion dict (ISO ``starts_at``/``ends_at``) or a
    ``kefu.kg.promotions.Promotion``; a missing bound is open."""
    get = promo.get if isinstance(promo, dict) else (lambda key: getattr(promo, key, None))
    now = now or shop_now()
    starts, ends = _when(get("starts_at"), promo, "starts_at"), _when(get("ends_at"), promo, "ends_at")
    if starts is not None and now < starts:
        return NOT_STARTED
    if ends is not None and now > ends:
        return EXPIRED
    return IN_FORCE


def promotions_in_force(promotions: Iterable[Any], now: datetime | None = None) -> list[Any]:
    """The promotions (dicts or ``Promotion`` records) with ``starts_at <= now <= ends_at``; ``now`` defaults to the
    shop clock. Serving calls this before promotions become the model's facts, so the model never sees an expired
    or future offer as current."""
    now = now or shop_now()
    return [p for p in promotions if promotion_state(p, now) == IN_FORCE]


def active_claims(promotions: Iterable[dict[str, Any]]) -> list[PromotionClaim]:
    """The claims the given promotions support: their structured fields plus their descriptions (no date check:
    filter with ``promotions_in_force`` first)."""
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


def _sentence(text: str, start: int, end: int) -> str:
    left, right = start, end
    while left > 0 and text[left - 1] not in _SENTENCE_END:
        left -= 1
    while right < len(text) and text[right] not in _SENTENCE_END:
        right += 1
    return text[left:right]


def _promotion_hits(text: str, promotions: list[dict[str, Any]], now: datetime | None = None) -> list[Violation]:
    now = now or shop_now()
    by_state: dict[str, list[dict[str, Any]]] = {IN_FORCE: [], EXPIRED: [], NOT_STARTED: []}
    for promo in promotions:
        if isinstance(promo, dict):
            by_state[promotion_state(promo, now)].append(promo)
    in_force = by_state[IN_FORCE]
    allowed = active_claims(in_force)
    expired, future = active_claims(by_state[EXPIRED]), active_claims(by_state[NOT_STARTED])
    descriptions = "，".join(str(p.get("description")) for p in in_force if p.get("description"))
    hits = []
    for start, end, claim in parse_promotion_claims(text):
        if _supported(claim, allowed):
            continue
        rule = "promotion-mismatch"
        if _supported(claim, expired):
            if _SAYS_EXPIRED.search(_sentence(text, start, end)):
                continue
            rule = "promotion-expired"
        elif _supported(claim, future):
            if _SAYS_NOT_STARTED.search(_sentence(text, start, end)):
                continue
            rule = "promotion-not-started"
        elif _SAYS_OVER_STRICT.search(_sentence(text, start, end)):
            continue
        same_threshold = [a for a in allowed if a.kind == claim.kind and claim.kind != "discount"
                          and a.threshold_fen == claim.threshold_fen]
        if same_threshold:
            suggestion = same_threshold[0].describe()
        elif descriptions:
            suggestion = f"当前活动（{descriptions}）"
        else:
            suggestion = "优惠（以活动页面为准）"
        hits.append(Violation(rule, "promotion", ART_PRICE, start, end, text[start:end], suggestion))
    return hits

