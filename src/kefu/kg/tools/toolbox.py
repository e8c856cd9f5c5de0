"""The ToolBox: runs the model's tool calls for one authenticated customer.

Scoping is enforced twice: the backend is always asked *for* a customer (an order that is not theirs comes back as
None, exactly like one that does not exist), and the ToolBox re-checks ``customer_id`` on whatever comes back, so a
misbehaving backend still cannot leak another customer's order. Tool results are JSON-ready dicts; a problem is
``{"ok": False, "error": "..."}`` (the model reads it and can ask the customer), never an exception.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Callable

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from kefu.clock import shop_now
from kefu.kg.importer import Problems, order_from_dict
from kefu.kg.promotions import CartItem, price_cart
from kefu.kg.recommend import recommend
from kefu.kg.records import Order
from kefu.kg.store import KnowledgeGraph
from kefu.kg.tools.backends import OrderBackend, OrderBackendError
from kefu.kg.tools.returns import return_eligibility
from kefu.kg.tools.schemas import (TOOL_MODELS, CheckReturnEligibility, ComputePrice, CreateAfterSalesTicket,
                                   GetLogistics, GetOrderStatus, RecommendProducts, TransferToHuman,
                                   validation_message)
from kefu.safety import audit
from kefu.text.numbers import format_fen as yuan
from kefu.types import KefuError


class _NotFound(KefuError):
    """Not the customer's order (or no such order): the two are reported identically."""


def _error(message: str) -> dict:
    return {"ok": False, "error": message}


class ToolBox:
    """Runs tool calls for one authenticated customer; returns JSON-ready dicts (``{"ok": False, "error": ...}``)."""

    def __init__(self, kg: KnowledgeGraph, backend: OrderBackend, customer_id: str, *,
                 clock: Callable[[], datetime] | None = None):
        if not customer_id:
            raise KefuError("ToolBox needs the authenticated customer_id")
        self.kg, self.backend, self.customer_id = kg, backend, customer_id
        self.clock = clock or shop_now

    def call(self, name: str, arguments: dict | str) -> dict:
        """Validate ``arguments`` (a dict or the JSON string a model emits) and run tool ``name``."""
        model = TOOL_MODELS.get(name)
        if model is None:
            return _error(f"unknown tool {name!r}; available: {', '.join(TOOL_MODELS)}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return _error(f"{name}: arguments are not valid JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(arguments, dict):
            return _error(f"{name}: arguments must be a JSON object")
        try:
            args = model.model_validate(arguments)
        except ValidationError as exc:
            return _error(validation_message(name, exc))
        try:
            result = getattr(self, f"_{name}")(args)
        except _NotFound as exc:
            return self._not_found(str(exc))
        except OrderBackendError as exc:
            return _error(f"订单系统暂时无法查询，请稍后再试或转人工（{exc}）")
        except KefuError as exc:
            return _error(f"{name}: {exc}")
        except SQLAlchemyError as exc:  # the knowledge graph's database is down: say so, do not crash the chat
            return _error(f"{name}: 知识库暂时无法访问，请稍后再试或转人工（{type(exc).__name__}）")
        return {"ok": True, **result}

    # -------------------------------------------------------------------------------------------------- helpers
    def _own(self, data: dict | None) -> Order | None:
        """Parse a backend reply and re-check ownership: someone else's order is reported exactly like a missing one."""
        if data is None:
            return None
        problems = Problems()
        order = order_from_dict(data, "order service reply", problems)
        if problems.items:
            raise OrderBackendError("; ".join(problems.items[:3]))
        return order if order and order.customer_id == self.customer_id else None

    def _not_found(self, number: str) -> dict:
        # the number is not said back: normalised ("2611-2138-…" typed), someone else's would read as disclosed
        return _error("没有查到订单（请核对订单号，或确认是用下单账号咨询）")

    def _item_names(self, order: Order) -> list[dict]:
        items = []
        for item in order.items:
            product = self.kg.product(item.sku)
            items.append({"sku": item.sku, "name": product.name if product else item.sku, "quantity": item.quantity,
                          "unit_price": yuan(item.unit_price_fen)})
        return items

    def _summary(self, order: Order) -> dict:
        latest = order.shipment.latest if order.shipment else None
        return {"order_no": order.order_no, "status": order.status, "created_at": order.created_at.isoformat(),
                "paid": yuan(order.paid_fen), "paid_fen": order.paid_fen, "items": self._item_names(order),
                "carrier": order.shipment.carrier if order.shipment else None,
                "tracking_no": order.shipment.tracking_no if order.shipment else None,
                "latest_event": ({"time": latest.time.isoformat(), "status": latest.status, "location": latest.location}
                                 if latest else None)}

    # ---------------------------------------------------------------------------------------------------- tools
    def _get_order_status(self, args: GetOrderStatus) -> dict:
        if args.order_no is None:
            orders = [o for o in (self._own(d) for d in self.backend.list_orders(self.customer_id, 5)) if o]
            return {"orders": [self._summary(o) for o in orders]}
        order = self._own(self.backend.get_order(args.order_no, self.customer_id))
        if order is None:
            raise _NotFound(args.order_no)
        return {"order": self._summary(order)}

    def _get_logistics(self, args: GetLogistics) -> dict:
        if not args.order_no and not args.tracking_no:
            raise KefuError("give order_no or tracking_no")
        if args.order_no:
            order = self._own(self.backend.get_order(args.order_no, self.customer_id))
        else:
            order = self._own(self.backend.find_by_tracking(args.tracking_no or "", self.customer_id))
        if order is None:
            raise _NotFound(args.order_no or args.tracking_no or "")
        if order.shipment is None:
            return {"order_no": order.order_no, "status": order.status, "shipped": False, "events": []}
        return {"order_no": order.order_no, "status": order.status, "shipped": True,
                "carrier": order.shipment.carrier, "tracking_no": order.shipment.tracking_no,
                "events": [{"time": e.time.isoformat(), "status": e.status, "location": e.location}
                           for e in order.shipment.events]}

    def _compute_price(self, args: ComputePrice) -> dict:
        items = []
        unknown = []
        for line in args.items:
            product = self.kg.product(line.sku)
            if product is None:
                unknown.append(line.sku)
            else:
                items.append(CartItem(product.sku, line.quantity, product.price_fen, product.category))
        if unknown:
            raise KefuError(f"unknown SKU {', '.join(unknown)}")
        now = self.clock()
        result = price_cart(items, self.kg.promotions(now), now, set(args.coupon_codes))
        return {"at": now.isoformat(), **result.to_dict()}

    def _check_return_eligibility(self, args: CheckReturnEligibility) -> dict:
        order = self._own(self.backend.get_order(args.order_no, self.customer_id))
        if order is None:
            raise _NotFound(args.order_no)
        return {"order_no": order.order_no, "status": order.status,
                "items": return_eligibility(self.kg, order, self.clock(), sku=args.sku, reason=args.reason,
                                            opened=args.opened)}

    def _recommend_products(self, args: RecommendProducts) -> dict:
        to_fen = (lambda y: None if y is None else int(round(y * 100)))
        picks = recommend(self.kg, category=args.category, color=args.color, size=args.size,
                          min_price_fen=to_fen(args.min_price_yuan), max_price_fen=to_fen(args.max_price_yuan),
                          style=args.style, brand=args.brand, keyword=args.keyword, limit=args.limit)
        return {"products": [r.to_dict() for r in picks]}

    def _create_after_sales_ticket(self, args: CreateAfterSalesTicket) -> dict:
        order = self._own(self.backend.get_order(args.order_no, self.customer_id))
        if order is None:
            raise _NotFound(args.order_no)
        if args.sku and all(i.sku != args.sku for i in order.items):
            raise KefuError(f"order {args.order_no} has no item {args.sku}")
        ticket = self.backend.create_ticket(self.customer_id, args.type, order.order_no,
                                            {"description": args.description, "sku": args.sku})
        _audit("kg.ticket", ticket.get("ticket_id", "?"), {"kind": args.type, "order_no": order.order_no,
                                                           "customer_id": self.customer_id})
        return {"ticket": ticket}

    def _transfer_to_human(self, args: TransferToHuman) -> dict:
        ticket = self.backend.create_ticket(self.customer_id, "handoff", None,
                                            {"reason": args.reason, "urgency": args.urgency})
        _audit("kg.handoff", ticket.get("ticket_id", "?"), {"urgency": args.urgency, "customer_id": self.customer_id})
        return {"transferred": True, "ticket": ticket, "message": "已为您转接人工客服，请稍候。"}


def _audit(action: str, obj: str, details: dict) -> None:
    audit.record(action, obj, details=details)
