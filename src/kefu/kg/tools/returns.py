"""The return policy: whether each item of an order can be returned, exchanged or repaired now, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kefu.kg.records import Order
from kefu.kg.store import KnowledgeGraph
from kefu.types import KefuError


def return_eligibility(kg: KnowledgeGraph, order: Order, now: datetime, *, sku: str | None = None,
                       reason: str = "no_reason", opened: bool = False) -> list[dict]:
    """Per item of ``order``: can it be returned / exchanged / repaired now, and why (Chinese)."""
    start = order.delivered_at
    days = None if start is None else (now - start).total_seconds() / 86400
    results = []
    for item in order.items:
        if sku and item.sku != sku:
            continue
        product = kg.product(item.sku)
        category = product.category if product else "*"
        policy = kg.policy(category)
        entry: dict[str, Any] = {"sku": item.sku, "name": product.name if product else item.sku, "category": category}
        if policy is None:
            entry.update(returnable=False, exchangeable=False, repairable=False, reasons=["未配置售后政策，请转人工"])
            results.append(entry)
            continue
        reasons = []
        if order.status in ("待付款", "已取消"):
            entry.update(returnable=False, exchangeable=False, repairable=False,
                         reasons=[f"订单{order.status}，无需售后"])
            results.append(entry)
            continue
        if start is None and order.status in ("已签收", "已完成", "退款中"):
            entry.update(returnable=False, exchangeable=False, repairable=False, days_since_delivery=None,
                         reasons=["订单已签收但没有签收时间记录，无法计算售后期限，请转人工核实"], policy=policy.summary())
            results.append(entry)
            continue
        if start is None:
            reasons.append("尚未签收：可申请退款/拒收，签收后按售后政策处理")
            entry.update(returnable=order.status in ("待发货", "已发货"), exchangeable=False, repairable=False,
                         days_since_delivery=None, reasons=reasons, policy=policy.summary())
            results.append(entry)
            continue
        quality = reason in ("quality", "wrong_item")
        returnable = False
        if quality:
            window = max(policy.return_days, 7)
            returnable = days <= window  # type: ignore[operator]
            reasons.append(f"质量问题/发错货：签收{window}天内可退，运费由卖家承担" if returnable
                           else f"已超过签收后{window}天，质量问题可申请维修或转人工")
        elif not policy.seven_day_no_reason:
            reasons.append(f"{category}不支持7天无理由退货" + (f"（{'；'.join(policy.exceptions)}）" if policy.exceptions else ""))
        elif opened and policy.exceptions:
            reasons.append("已拆封/使用：" + "；".join(policy.exceptions))
        else:
            returnable = days <= policy.return_days  # type: ignore[operator]
            reasons.append(f"已签收{days:.1f}天，" + (f"在{policy.return_days}天无理由退货期内" if returnable
                                                   else f"已超过{policy.return_days}天无理由退货期")
                           + ("；条件：" + "、".join(policy.conditions) if policy.conditions and returnable else ""))
        exchangeable = bool(policy.exchange_days) and days <= policy.exchange_days  # type: ignore[operator]
        repairable = bool(policy.repair_days) and days <= policy.repair_days  # type: ignore[operator]
        reasons.append(f"换货期{policy.exchange_days}天：{'可换' if exchangeable else '已过'}" if policy.exchange_days
                       else "不支持换货")
        if policy.repair_days:
            reasons.append(f"保修期{policy.repair_days}天：{'可修' if repairable else '已过'}")
        entry.update(returnable=returnable, exchangeable=exchangeable, repairable=repairable,
                     days_since_delivery=round(days, 1), reasons=reasons, policy=policy.summary())  # type: ignore[arg-type]
        results.append(entry)
    if sku and not results:
        raise KefuError(f"order {order.order_no} has no item {sku}")
    return results
