"""Exact cart pricing under a shop's promotions: integer fen, the best legal combination, explained in Chinese.

Rules (the same ones ``examples/shop/SCHEMA.md`` states, made precise here):

* A promotion applies only inside its validity window (``starts_at <= at <= ends_at``) and only to the cart lines it
  makes eligible (``all``, or listed SKUs and/or categories). A coupon applies only when its code is presented.
* Stacking: every promotion in force that covers a cart item applies automatically (SCHEMA.md), except that each
  ``stack_group`` contributes exactly one of its promotions (the one cheapest for the customer) and an ``exclusive``
  promotion applies alone (chosen when that is cheaper). A promotion without a stack group stacks with anything that
  is not exclusive. So a discount is not left out to reach a reduction's threshold: 儿童冲锋衣 ¥329 九折 is ¥296.10,
  under 满300, and stays ¥296.10.
* Order of application: discounts (折扣) on eligible lines → gift thresholds (满赠, on the eligible subtotal after
  discounts) → full reductions (满减, highest reached tier once) and per-full reductions (每满减, optional cap) → coupons.
  Inside one stage, by promotion id. Each promotion sees the line amounts the previous ones left, so a reduction's
  threshold is measured on the eligible subtotal *after* the discounts before it.
* Rounding: a discounted line amount rounds **down** to the fen, in the customer's favour, as the sample shop's
  policy states (``floor(line × rate / 100)``; with
  ``max_quantity`` only that many units — the dearest first — are discounted, still one rounding per line). A
  reduction or coupon is spread over its eligible lines in proportion to their amounts (largest remainder, ties by
  line order) so later stages see exact per-line amounts; a reduction never exceeds the amount it reduces.
* Gifts are added at 0 fen and never change the payable amount.
* Choice: every complete legal combination is considered (branch and bound, exact); the winner has the lowest payable amount,
  then the most gift units, then the fewest promotions, then the smallest sorted id tuple — so the same cart and
  promotions always give the same answer whatever order the promotions come in.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from kefu.text.numbers import format_fen
from kefu.types import KefuError

PROMOTION_TYPES = ("full_reduction", "per_full_reduction", "discount", "gift", "coupon")
_STAGE = {"discount": 0, "gift": 1, "full_reduction": 2, "per_full_reduction": 2, "coupon": 3}
TYPE_NAMES = {"full_reduction": "满减", "per_full_reduction": "每满减", "discount": "折扣", "gift": "满赠",
              "coupon": "优惠券"}


@dataclass(frozen=True, slots=True)
class Promotion:
    """One validated promotion (see ``examples/shop/SCHEMA.md``). Money in fen, datetimes timezone-aware."""

    id: str
    name: str
    type: str
    starts_at: datetime
    ends_at: datetime
    tiers: tuple[tuple[int, int], ...] = ()  # full_reduction: (threshold_fen, reduction_fen), ascending
    per_threshold_fen: int = 0
    per_reduction_fen: int = 0
    cap_fen: int | None = None
    rate_percent: int = 100
    max_quantity: int | None = None
    threshold_fen: int = 0  # gift, coupon
    reduction_fen: int = 0  # coupon
    gift_sku: str | None = None
    gift_quantity: int = 0
    code: str | None = None
    eligible_all: bool = True
    eligible_skus: frozenset[str] = frozenset()
    eligible_categories: frozenset[str] = frozenset()
    stack_group: str | None = None
    exclusive: bool = False
    description: str = ""

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at <= self.ends_at

    def eligible(self, sku: str, category: str) -> bool:
        return self.eligible_all or sku in self.eligible_skus or category in self.eligible_categories

    @property
    def stage(self) -> int:
        return _STAGE[self.type]

    def rule_text(self) -> str:
        """The rule in the words a shop would use: 满300减50 / 每满200减20，最多减60 / 8.5折 / 满199赠… / 券满100减10."""
        def short(fen: int) -> str:
            return format_fen(fen, short=True)

        if self.type == "full_reduction":
            return "，".join(f"满{short(t)}减{short(r)}" for t, r in self.tiers)
        if self.type == "per_full_reduction":
            text = f"每满{short(self.per_threshold_fen)}减{short(self.per_reduction_fen)}"
            return text + (f"，最多减{short(self.cap_fen)}" if self.cap_fen is not None else "")
        if self.type == "discount":
            rate = self.rate_percent
            text = f"{rate // 10}折" if rate % 10 == 0 else f"{rate / 10:g}折"
            return text + (f"（限{self.max_quantity}件）" if self.max_quantity else "")
        if self.type == "gift":
            return f"满{short(self.threshold_fen)}赠{self.gift_sku}×{self.gift_quantity}"
        return f"券{self.code}：满{short(self.threshold_fen)}减{short(self.reduction_fen)}"

    def scope_text(self) -> str:
        if self.eligible_all:
            return "全店"
        parts = sorted(self.eligible_categories) + sorted(self.eligible_skus)
        return "、".join(parts[:6]) + ("等" if len(parts) > 6 else "")

    def to_dict(self) -> dict[str, Any]:
        """The schema's JSON form (what ``promotion_from_dict`` reads)."""
        data: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type,
                                "starts_at": self.starts_at.isoformat(), "ends_at": self.ends_at.isoformat(),
                                "eligible": {"all": self.eligible_all, "skus": sorted(self.eligible_skus),
                                             "categories": sorted(self.eligible_categories)},
                                "stack_group": self.stack_group, "exclusive": self.exclusive,
                                "description": self.description}
        if self.type == "full_reduction":
            data["tiers"] = [{"threshold_fen": t, "reduction_fen": r} for t, r in self.tiers]
        elif self.type == "per_full_reduction":
            data.update(per_threshold_fen=self.per_threshold_fen, per_reduction_fen=self.per_reduction_fen,
                        cap_fen=self.cap_fen)
        elif self.type == "discount":
            data.update(rate_percent=self.rate_percent, max_quantity=self.max_quantity)
        elif self.type == "gift":
            data.update(threshold_fen=self.threshold_fen, gift_sku=self.gift_sku, gift_quantity=self.gift_quantity)
        else:
            data.update(threshold_fen=self.threshold_fen, reduction_fen=self.reduction_fen, code=self.code)
        return data


@dataclass(slots=True)
class CartItem:
    """One cart line: ``unit_price_fen`` is the list price before any promotion."""

    sku: str
    quantity: int
    unit_price_fen: int
    category: str


@dataclass(slots=True)
class AppliedPromotion:
    """A promotion in the chosen combination and what it saved (0 for a gift)."""

    id: str
    name: str
    type: str
    saved_fen: int
    detail: str


@dataclass(slots=True)
class Gift:
    sku: str
    quantity: int
    promotion_id: str


@dataclass(slots=True)
class PriceResult:
    """The exact price of a cart: ``payable_fen = total_fen - saved_fen``; ``explanation`` is Chinese, in order."""

    total_fen: int
    payable_fen: int
    saved_fen: int
    applied: list[AppliedPromotion] = field(default_factory=list)
    gifts: list[Gift] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    lines_fen: list[int] = field(default_factory=list)  # payable per cart line, same order as the input

    def to_dict(self) -> dict[str, Any]:
        return {"total_fen": self.total_fen, "payable_fen": self.payable_fen, "saved_fen": self.saved_fen,
                "total": format_fen(self.total_fen), "payable": format_fen(self.payable_fen),
                "saved": format_fen(self.saved_fen),
                "applied": [{"id": a.id, "name": a.name, "type": a.type, "saved_fen": a.saved_fen, "detail": a.detail}
                            for a in self.applied],
                "gifts": [{"sku": g.sku, "quantity": g.quantity, "promotion_id": g.promotion_id} for g in self.gifts],
                "explanation": list(self.explanation), "lines_fen": list(self.lines_fen)}


# --------------------------------------------------------------------------------------------------- the engine
class _Cart:
    """The cart in the engine's form: per line amount, quantity, unit price, and per promotion its eligible lines."""

    __slots__ = ("amounts", "quantities", "units", "eligible")

    def __init__(self, items: list[CartItem], promotions: list[Promotion]):
        self.amounts = [it.quantity * it.unit_price_fen for it in items]
        self.quantities = [it.quantity for it in items]
        self.units = [it.unit_price_fen for it in items]
        self.eligible = {p.id: tuple(i for i, it in enumerate(items) if p.eligible(it.sku, it.category))
                         for p in promotions}


def _spread(amounts: list[int], lines: tuple[int, ...], reduction: int) -> None:
    """Take ``reduction`` fen off ``lines`` in proportion to their amounts (largest remainder, ties by line order)."""
    subtotal = sum(amounts[i] for i in lines)
    if reduction <= 0 or subtotal <= 0:
        return
    shares = []
    taken = 0
    for i in lines:
        share, rest = divmod(amounts[i] * reduction, subtotal)
        shares.append([i, share, rest])
        taken += share
    left = reduction - taken
    if left:
        for entry in sorted(shares, key=lambda e: (-e[2], e[0]))[:left]:
            entry[1] += 1
    for i, share, _ in shares:
        amounts[i] -= share


def _apply(p: Promotion, cart: _Cart, amounts: list[int]) -> tuple[int, str, Gift | None] | None:
    """Apply ``p`` to ``amounts`` in place. Returns (saved, detail, gift) or None when it does not take effect."""
    lines = cart.eligible[p.id]
    if not lines:
        return None
    if p.type == "discount":
        budget = p.max_quantity
        order = sorted(lines, key=lambda i: (-cart.units[i], i)) if budget is not None else lines
        saved = 0
        for i in order:
            q = cart.quantities[i]
            d = q if budget is None else min(q, budget)
            if d <= 0 or amounts[i] <= 0:
                continue
            if budget is not None:
                budget -= d
            new = amounts[i] * ((q - d) * 100 + d * p.rate_percent) // (100 * q)
            saved += amounts[i] - new
            amounts[i] = new
        if saved <= 0:
            return None
        return saved, f"{p.rule_text()}，适用{len(lines)}行商品", None
    subtotal = sum(amounts[i] for i in lines)
    if p.type == "gift":
        if subtotal < p.threshold_fen:
            return None
        return 0, f"适用商品满¥{format_fen(p.threshold_fen)}，赠{p.gift_sku}×{p.gift_quantity}", Gift(
            p.gift_sku or "", p.gift_quantity, p.id)
    if p.type == "full_reduction":
        reached = [(t, r) for t, r in p.tiers if subtotal >= t]
        if not reached:
            return None
        threshold, reduction = reached[-1]
        detail = f"适用商品¥{format_fen(subtotal)}满¥{format_fen(threshold)}，减¥{format_fen(min(reduction, subtotal))}"
    elif p.type == "per_full_reduction":
        times = subtotal // p.per_threshold_fen
        if times <= 0:
            return None
        reduction = times * p.per_reduction_fen
        capped = p.cap_fen is not None and reduction > p.cap_fen
        if capped:
            reduction = p.cap_fen  # type: ignore[assignment]
        detail = (f"适用商品¥{format_fen(subtotal)}含{times}个¥{format_fen(p.per_threshold_fen)}，"
                  f"减¥{format_fen(min(reduction, subtotal))}" + ("（已达封顶）" if capped else ""))
    else:  # coupon
        if subtotal < p.threshold_fen:
            return None
        reduction = p.reduction_fen
        detail = f"使用优惠券{p.code}（满¥{format_fen(p.threshold_fen)}），减¥{format_fen(min(reduction, subtotal))}"
    reduction = min(reduction, subtotal)
    if reduction <= 0:
        return None
    _spread(amounts, lines, reduction)
    return reduction, detail, None


def _max_saving(p: Promotion, cart: _Cart) -> int:
    """An upper bound on what ``p`` can save in any combination (every rule is monotone in the line amounts)."""
    lines = cart.eligible[p.id]
    subtotal = sum(cart.amounts[i] for i in lines)
    if p.type == "discount":
        trial = list(cart.amounts)
        result = _apply(p, cart, trial)
        return result[0] if result else 0
    if p.type == "gift":
        return 0
    if p.type == "full_reduction":
        reached = [r for t, r in p.tiers if subtotal >= t]
        return min(max(reached), subtotal) if reached else 0
    if p.type == "per_full_reduction":
        saving = (subtotal // p.per_threshold_fen) * p.per_reduction_fen
        return min(saving if p.cap_fen is None else min(saving, p.cap_fen), subtotal)
    return min(p.reduction_fen, subtotal) if subtotal >= p.threshold_fen else 0


def _reachable(p: Promotion, cart: _Cart) -> bool:
    """Can ``p`` take effect at all in this cart? (Thresholds are checked on the undiscounted amounts: an upper bound.)"""
    lines = cart.eligible[p.id]
    if not lines:
        return False
    subtotal = sum(cart.amounts[i] for i in lines)
    if p.type == "gift":
        return subtotal >= p.threshold_fen and p.gift_quantity > 0
    return _max_saving(p, cart) > 0


def _rank(payable: int, gift_units: int, ids: tuple[str, ...]) -> tuple:
    return (payable, -gift_units, len(ids), ids)


def _evaluate(combo: Iterable[Promotion], cart: _Cart) -> tuple[list[int], list[tuple[Promotion, int, str, Gift | None]]]:
    amounts = list(cart.amounts)
    steps = []
    for p in sorted(combo, key=lambda q: (q.stage, q.id)):
        result = _apply(p, cart, amounts)
        if result is not None:
            steps.append((p, *result))
    return amounts, steps


def stacks(combo: Iterable[Promotion]) -> bool:
    """Whether these promotions may apply together: no exclusive one among several, at most one per stack group."""
    combo = tuple(combo)
    if len(combo) > 1 and any(p.exclusive for p in combo):
        return False
    groups = [p.stack_group for p in combo if p.stack_group]
    return len(groups) == len(set(groups))


def _usable(items: list[CartItem], promotions: list[Promotion], at: datetime,
            coupon_codes: set[str] | None) -> tuple[list[Promotion], list[str]]:
    """Promotions in force at ``at`` (coupons only when presented), sorted by (stage, id); notes on presented codes."""
    if at.tzinfo is None:
        raise KefuError("price_cart: `at` must be timezone-aware (e.g. 2026-11-11T10:00:00+08:00)")
    for n, it in enumerate(items, start=1):
        if it.quantity <= 0:
            raise KefuError(f"cart line {n} ({it.sku}): quantity must be a positive integer, got {it.quantity}")
        if it.unit_price_fen < 0:
            raise KefuError(f"cart line {n} ({it.sku}): unit_price_fen must not be negative, got {it.unit_price_fen}")
    codes = {c.strip() for c in (coupon_codes or set()) if c and c.strip()}
    seen: dict[str, Promotion] = {}
    for p in promotions:
        if p.id in seen and seen[p.id] != p:
            raise KefuError(f"price_cart: two different promotions share the id {p.id}")
        seen[p.id] = p
    usable = []
    notes = []
    known_codes = {p.code: p for p in seen.values() if p.type == "coupon"}
    for code in sorted(codes):
        coupon = known_codes.get(code)
        if coupon is None:
            notes.append(f"优惠券{code}无效（不存在）")
        elif not coupon.active(at):
            notes.append(f"优惠券{code}不在有效期内（{coupon.starts_at:%Y-%m-%d %H:%M}至{coupon.ends_at:%Y-%m-%d %H:%M}）")
    for p in seen.values():
        if not p.active(at):
            continue
        if p.type == "coupon" and p.code not in codes:
            continue
        usable.append(p)
    usable.sort(key=lambda q: (q.stage, q.id))
    return usable, notes


def price_cart(items: list[CartItem], promotions: list[Promotion], at: datetime,
               coupon_codes: set[str] | None = None) -> PriceResult:
    """Exact payable amount of ``items`` at time ``at`` under the best legal combination of ``promotions``.

    ``coupon_codes``: the codes the customer presents; a coupon promotion applies only when its code is among them.
    Raises ``KefuError`` for a naive ``at``, a non-positive quantity or a negative price.
    """
    usable, notes = _usable(items, promotions, at, coupon_codes)
    cart = _Cart(items, usable)
    # a group with a member that covers the cart but cannot take effect may give that one: nothing (满300 on ¥207
    # leaves the 满200 coupon its threshold)
    idle = {p.stack_group for p in usable if cart.eligible[p.id] and not p.exclusive and not _reachable(p, cart)}
    usable = [p for p in usable if _reachable(p, cart)]
    total = sum(cart.amounts)

    best: tuple | None = None
    best_combo: tuple[Promotion, ...] = ()

    def consider(combo: tuple[Promotion, ...], payable: int, gift_units: int) -> None:
        nonlocal best, best_combo
        key = _rank(payable, gift_units, tuple(sorted(p.id for p in combo)))
        if best is None or key < best:
            best, best_combo = key, combo

    stackable = [p for p in usable if not p.exclusive]
    if not stackable:
        consider((), total, 0)
    for p in usable:  # an exclusive promotion applies alone
        if p.exclusive:
            amounts, steps = _evaluate((p,), cart)
            if steps:
                consider((p,), sum(amounts), sum(s[3].quantity for s in steps if s[3]))

    bounds = [0] * (len(stackable) + 1)
    for i in range(len(stackable) - 1, -1, -1):
        bounds[i] = bounds[i + 1] + _max_saving(stackable[i], cart)
    required = {p.stack_group for p in stackable if p.stack_group} - idle
    later = [{q.stack_group for q in stackable[i + 1:]} for i in range(len(stackable))]

    def search(i: int, amounts: list[int], payable: int, chosen: tuple[Promotion, ...], groups: frozenset[str],
               gift_units: int) -> None:
        if best is not None and payable - bounds[i] > best[0]:
            return  # even every remaining promotion at its best cannot beat the best found: prune
        if i == len(stackable):
            if groups >= required:  # every stack group gave one (it applies automatically)
                consider(chosen, payable, gift_units)
            return
        p = stackable[i]
        if not (p.stack_group and p.stack_group in groups):
            trial = list(amounts)
            result = _apply(p, cart, trial)
            taken = groups | {p.stack_group} if p.stack_group else groups
            if result is not None:
                search(i + 1, trial, payable - result[0], chosen + (p,), taken,
                       gift_units + (result[2].quantity if result[2] else 0))
            else:  # applied, without effect
                search(i + 1, amounts, payable, chosen, taken, gift_units)
        if p.stack_group and (p.stack_group in groups or p.stack_group in later[i] or p.stack_group not in required):
            search(i + 1, amounts, payable, chosen, groups, gift_units)  # its group gives another one (or an idle one)

    search(0, list(cart.amounts), total, (), frozenset(), 0)
    return _result(items, cart, best_combo, notes, usable)


def price_cart_bruteforce(items: list[CartItem], promotions: list[Promotion], at: datetime,
                          coupon_codes: set[str] | None = None) -> PriceResult:
    """The reference: every one of the 2^n subsets of the promotions in force, the complete legal ones (an exclusive
    one alone, or every stackable one that covers the cart with exactly one per stack group) evaluated in full.

    Same rules and tie-breaking as ``price_cart``; exponential, so only for tests and as the benchmark baseline.
    """
    usable, notes = _usable(items, promotions, at, coupon_codes)
    cart = _Cart(items, usable)
    covering = [p for p in usable if cart.eligible[p.id] and not p.exclusive]
    required = {p.stack_group for p in covering if p.stack_group}
    free = {p.id for p in covering if not p.stack_group}
    best = None
    best_combo: tuple[Promotion, ...] = ()
    for size in range(len(usable) + 1):
        for combo in itertools.combinations(usable, size):
            if not stacks(combo) or not all(cart.eligible[p.id] for p in combo):
                continue  # a promotion that covers nothing in the cart cannot be its group's one
            exclusive = len(combo) == 1 and combo[0].exclusive
            if not exclusive and ({p.stack_group for p in combo if p.stack_group} != required
                                  or not free <= {p.id for p in combo}):
                continue
            amounts, steps = _evaluate(combo, cart)
            effective = tuple(s[0] for s in steps)
            key = _rank(sum(amounts), sum(s[3].quantity for s in steps if s[3]), tuple(sorted(p.id for p in effective)))
            if best is None or key < best:
                best, best_combo = key, effective
    return _result(items, cart, best_combo, notes, [p for p in usable if _reachable(p, cart)])


def _why_not(p: Promotion, combo: tuple[Promotion, ...], cart: _Cart, payable: int) -> str:
    """Why a promotion in force is not in the chosen combination, in one Chinese clause."""
    exclusive = next((c for c in combo if c.exclusive), None)
    if exclusive is not None:
        return f"「{p.name}」——已选独享优惠「{exclusive.name}」，不与其他优惠同享"
    if p.exclusive:
        return f"「{p.name}」为独享优惠，单独使用不如当前组合划算"
    rival = next((c for c in combo if p.stack_group and c.stack_group == p.stack_group), None)
    if rival is not None:
        return f"「{p.name}」与「{rival.name}」同属{p.stack_group}组，只能选一个，已选更划算的"
    amounts, steps = _evaluate(combo + (p,), cart)
    if all(step[0].id != p.id for step in steps):
        return f"「{p.name}」在当前组合下未达到使用门槛"
    return f"「{p.name}」叠加后实付¥{format_fen(sum(amounts))}，不如不用（¥{format_fen(payable)}）"


def _result(items: list[CartItem], cart: _Cart, combo: tuple[Promotion, ...], notes: list[str],
            considered: list[Promotion]) -> PriceResult:
    total = sum(cart.amounts)
    amounts, steps = _evaluate(combo, cart)
    payable = sum(amounts)
    explanation = [f"原价合计¥{format_fen(total)}（{sum(it.quantity for it in items)}件）"]
    applied = []
    gifts = []
    for n, (p, saved, detail, gift) in enumerate(steps, start=1):
        applied.append(AppliedPromotion(p.id, p.name, p.type, saved, detail))
        if gift:
            gifts.append(gift)
            explanation.append(f"{n}. 「{p.name}」（{TYPE_NAMES[p.type]}）：{detail}，赠品按¥0.00计")
        else:
            explanation.append(f"{n}. 「{p.name}」（{TYPE_NAMES[p.type]}）：{detail}，省¥{format_fen(saved)}")
    if not steps:
        explanation.append("没有可用的优惠" if not considered else "可用优惠均未达到使用条件")
    chosen = {p.id for p in combo}
    for p in [p for p in considered if p.id not in chosen][:6]:
        explanation.append("未用：" + _why_not(p, combo, cart, payable))
    explanation.extend(notes)
    explanation.append(f"实付¥{format_fen(payable)}，共省¥{format_fen(total - payable)}")
    return PriceResult(total, payable, total - payable, applied, gifts, explanation, amounts)
