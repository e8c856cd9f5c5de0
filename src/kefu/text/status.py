"""The status words of an order, its parcel and its after-sales case: one table, so the KG schema, the answer
grounding and the evaluation agree on which words are statuses.

Callers choose the set they mean: ``ORDER_STATUSES`` is what an order record's ``status`` may be (the KG schema,
``examples/shop/SCHEMA.md``); ``LOGISTICS_STATUSES`` are the parcel's tracking events; ``AFTER_SALES_STATUSES`` a
refund's progress; ``STATUS_WORDS`` is every one of them (a reply stating any of them states a status).
"""

from __future__ import annotations

__all__ = ["ORDER_STATUSES", "LOGISTICS_STATUSES", "AFTER_SALES_STATUSES", "STATUS_WORDS"]

ORDER_STATUSES = ("待付款", "待发货", "已发货", "已签收", "已完成", "已取消", "退款中")
LOGISTICS_STATUSES = ("已出库", "已揽收", "运输中", "派送中", "已签收")
AFTER_SALES_STATUSES = ("退款中", "已退款")
STATUS_WORDS = tuple(dict.fromkeys(ORDER_STATUSES + LOGISTICS_STATUSES + AFTER_SALES_STATUSES))
