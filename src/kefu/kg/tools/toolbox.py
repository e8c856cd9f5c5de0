"""Business tools the model may call (OpenAI function-calling schemas), each scoped to the authenticated customer,
behind an ``OrderBackend`` a shop replaces with its own order system.

Scoping is enforced twice: the backend is always asked *for* a customer (an order that is not theirs comes back as
None, exactly like one that does not exist), and the ToolBox re-checks ``customer_id`` on whatever comes back, so a
misbehaving backend still cannot leak another customer's order. Tool results are JSON-ready dicts; a problem is
``{"ok": False, "error": "..."}`` (the model reads it and can ask the customer), never an exception.

HTTP contract of ``HTTPOrderBackend`` (what a shop's order service implements; JSON bodies in the shape of
``examples/shop/orders.json`` entries):

* ``GET  {base}/customers/{customer_id}/orders/{order_no}`` → 200 order | 404
* ``GET  {base}/customers/{customer_id}/orders?limit=N`` → 200 ``{"orders": [order, ...]}`` (newest first)
* ``GET  {base}/customers/{customer_id}/shipments/{tracking_no}`` → 200 order | 404
* ``POST {base}/customers/{customer_id}/tickets`` body ``{"kind", "order_no", "details"}`` → 200/201 ticket
  ``{"ticket_id", ...}``

with ``Authorization: Bearer <api key>`` when a key is configured.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from kefu.kg.importer import Problems, order_from_dict
from kefu.kg.promotions import CartItem, price_cart, yuan
from kefu.kg.records import Order
from kefu.kg.store import KnowledgeGraph, TicketRow
from kefu.types import KefuError

TICKET_KINDS = ("return", "exchange", "repair", "refund", "lost", "damaged", "delay", "address_change", "refused",
                "complaint")


class OrderBackendError(KefuError):
    """The order system could not answer (down, timed out, bad reply)."""


class _NotFound(KefuError):
    """Not the customer's order (or no such order): the two are reported identically."""


class OrderBackend(Protocol):
    """The shop's order system, always asked on behalf of one customer: an order that is not theirs is None."""

    def get_order(self, order_no: str, customer_id: str) -> dict | None: ...

    def list_orders(self, customer_id: str, limit: int = 5) -> list[dict]: ...

    def find_by_tracking(self, tracking_no: str, customer_id: str) -> dict | None: ...

    def create_ticket(self, customer_id: str, kind: str, order_no: str | None, details: dict) -> dict: ...


class SQLiteOrderBackend:
    """The demo backend: orders imported into the knowledge graph, tickets in its ``kg_tickets`` table."""

    def __init__(self, kg: KnowledgeGraph):
        self.kg = kg

    def get_order(self, order_no: str, customer_id: str) -> dict | None:
        order = self.kg.order(order_no)
        return order.to_dict() if order and order.customer_id == customer_id else None

    def list_orders(self, customer_id: str, limit: int = 5) -> list[dict]:
        return [o.to_dict() for o in self.kg.orders_of(customer_id, limit=limit)]

    def find_by_tracking(self, tracking_no: str, customer_id: str) -> dict | None:
        order = self.kg.order_by_tracking(tracking_no)
        return order.to_dict() if order and order.customer_id == customer_id else None

    def create_ticket(self, customer_id: str, kind: str, order_no: str | None, details: dict) -> dict:
        from sqlalchemy.orm import Session

        ticket_id = "T" + uuid.uuid4().hex[:12].upper()
        created = datetime.now(timezone.utc).isoformat()
        with Session(self.kg.engine) as session, session.begin():
            session.add(TicketRow(id=ticket_id, customer_id=customer_id, kind=kind, order_no=order_no,
                                  created_at=created, data=details))
        return {"ticket_id": ticket_id, "kind": kind, "order_no": order_no, "status": "已受理", "created_at": created}


class HTTPOrderBackend:
    """The shop's own order service over HTTP (see the module docstring for the contract)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 3.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise OrderBackendError(f"order service {self.base_url} timed out after {self.timeout}s") from exc
        except httpx.HTTPError as exc:
            raise OrderBackendError(f"order service {self.base_url} unreachable: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise OrderBackendError(f"order service {self.base_url} refused the API key (HTTP {response.status_code})")
        if response.status_code >= 400:
            raise OrderBackendError(f"order service {self.base_url}{path}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise OrderBackendError(f"order service {self.base_url}{path}: reply is not JSON") from exc

    @staticmethod
    def _q(value: str) -> str:
        """One path segment, percent-encoded: an id can never climb to another customer's path."""
        return quote(value, safe="")

    def get_order(self, order_no: str, customer_id: str) -> dict | None:
        return self._request("GET", f"/customers/{self._q(customer_id)}/orders/{self._q(order_no)}")

    def list_orders(self, customer_id: str, limit: int = 5) -> list[dict]:
        data = self._request("GET", f"/customers/{self._q(customer_id)}/orders", params={"limit": limit})
        if data is None:
            return []
        if not isinstance(data, dict) or not isinstance(data.get("orders"), list):
            raise OrderBackendError(f"order service {self.base_url}: list reply must be {{\"orders\": [...]}}")
        return data["orders"]

    def find_by_tracking(self, tracking_no: str, customer_id: str) -> dict | None:
        return self._request("GET", f"/customers/{self._q(customer_id)}/shipments/{self._q(tracking_no)}")

    def create_ticket(self, customer_id: str, kind: str, order_no: str | None, details: dict) -> dict:
        data = self._request("POST", f"/customers/{self._q(customer_id)}/tickets",
                             json={"kind": kind, "order_no": order_no, "details": details})
        if not isinstance(data, dict) or "ticket_id" not in data:
            raise OrderBackendError(f"order service {self.base_url}: ticket reply must carry ticket_id")
        return data


def backend_from_config(kg: KnowledgeGraph, config: Any = None) -> OrderBackend:
    """The order backend ``kg:`` in kefu.yaml asks for: the demo SQLite one, or the shop's HTTP service (API key read
    from the environment variable ``order_api_key_env`` names, never from the file)."""
    import os

    from kefu.kg.config import KGConfig

    cfg = config or KGConfig()
    if cfg.order_backend == "sqlite":
        return SQLiteOrderBackend(kg)
    if not cfg.order_api_url:
        raise KefuError("kg.order_backend is http but kg.order_api_url is not set")
    return HTTPOrderBackend(cfg.order_api_url, api_key=os.environ.get(cfg.order_api_key_env),
                            timeout=cfg.order_api_timeout_s)


# ------------------------------------------------------------------------------------------- arguments (Pydantic)
ORDER_NO = r"^\d{16}$"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GetOrderStatus(_Args):
    """Status, items and amount of one of the customer's orders; without order_no, their most recent orders."""

    order_no: str | None = Field(None, pattern=ORDER_NO, description="16-digit order number; omit for recent orders")


class GetLogistics(_Args):
    """Carrier, tracking number and shipment events of one of the customer's orders (by order or tracking number)."""

    order_no: str | None = Field(None, pattern=ORDER_NO, description="16-digit order number")
    tracking_no: str | None = Field(None, min_length=6, max_length=32, description="carrier tracking number")


class CartLine(_Args):
    sku: str = Field(..., min_length=1, max_length=64, description="product SKU, e.g. SL-10023")
    quantity: int = Field(1, ge=1, le=999, description="units")


class ComputePrice(_Args):
    """Exact payable amount of a cart under the promotions in force now (best legal combination), with the rules."""

    items: list[CartLine] = Field(..., min_length=1, max_length=100, description="cart lines")
    coupon_codes: list[str] = Field(default_factory=list, max_length=10, description="coupon codes the customer has")


class CheckReturnEligibility(_Args):
    """Whether items of the customer's order can still be returned (7天无理由 / quality), exchanged or repaired."""

    order_no: str = Field(..., pattern=ORDER_NO, description="16-digit order number")
    sku: str | None = Field(None, description="only this item of the order")
    reason: Literal["no_reason", "quality", "wrong_item", "size"] = Field(
        "no_reason", description="no_reason=7天无理由, quality=质量问题, wrong_item=发错货, size=尺码不合适")
    opened: bool = Field(False, description="the item was unpacked / worn / washed")


class RecommendProducts(_Args):
    """Products matching the customer's wishes, diverse across brands/styles/prices, each with why it fits."""

    category: str | None = Field(None, description="品类, e.g. 冲锋衣")
    color: str | None = Field(None, description="颜色, e.g. 黑色")
    size: str | None = Field(None, description="尺码, e.g. L or 42")
    min_price_yuan: float | None = Field(None, ge=0, description="budget lower bound in yuan")
    max_price_yuan: float | None = Field(None, ge=0, description="budget upper bound in yuan")
    style: str | None = Field(None, description="风格, e.g. 城市通勤")
    brand: str | None = Field(None, description="品牌")
    keyword: str | None = Field(None, description="free word to match in name/description")
    limit: int = Field(5, ge=1, le=10, description="how many")


class CreateAfterSalesTicket(_Args):
    """Open an after-sales ticket (return, exchange, repair, lost/damaged parcel …) for one of the customer's orders."""

    order_no: str = Field(..., pattern=ORDER_NO, description="16-digit order number")
    type: Literal[TICKET_KINDS] = Field(..., description="ticket kind")  # type: ignore[valid-type]
    description: str = Field(..., min_length=2, max_length=500, description="what happened, in the customer's words")
    sku: str | None = Field(None, description="the item concerned, if one")


class TransferToHuman(_Args):
    """Hand the conversation to a human agent (complaints, disputes, anything the model must not decide)."""

    reason: str = Field(..., min_length=2, max_length=300, description="why a human is needed")
    urgency: Literal["low", "normal", "high"] = Field("normal", description="queue priority")


TOOL_MODELS: dict[str, type[_Args]] = {
    "get_order_status": GetOrderStatus, "get_logistics": GetLogistics, "compute_price": ComputePrice,
    "check_return_eligibility": CheckReturnEligibility, "recommend_products": RecommendProducts,
    "create_after_sales_ticket": CreateAfterSalesTicket, "transfer_to_human": TransferToHuman,
}


def _clean_schema(schema: dict, defs: dict | None = None) -> dict:
    """Pydantic JSON schema → the plain form function-calling APIs take: refs inlined, titles and nulls folded."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return _clean_schema(defs[schema["$ref"].split("/")[-1]], defs)
    out: dict[str, Any] = {}
    if "anyOf" in schema:  # Optional[X] -> X (absence already means null)
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {**options[0], **{k: v for k, v in schema.items() if k not in ("anyOf", "title", "default")}}
            return _clean_schema(merged, defs)
    for key, value in schema.items():
        if key in ("title", "$defs") or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {k: _clean_schema(v, defs) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _clean_schema(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object":
        out["additionalProperties"] = False
    return out


def _tool_schema(name: str, model: type[_Args]) -> dict:
    parameters = _clean_schema(model.model_json_schema())
    parameters.pop("description", None)
    return {"type": "function", "function": {"name": name, "description": (model.__doc__ or "").strip(),
                                             "parameters": parameters}}


TOOL_SCHEMAS: list[dict] = [_tool_schema(name, model) for name, model in TOOL_MODELS.items()]


def _error(message: str) -> dict:
    return {"ok": False, "error": message}


def _validation_message(name: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "arguments"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown argument"
        elif e["type"] == "string_pattern_mismatch" and "order_no" in loc:
            msg = "must be a 16-digit order number"
        parts.append(f"{loc}: {msg}")
    return f"{name}: invalid arguments — " + "; ".join(parts)


# --------------------------------------------------------------------------------------------------------- the box
class ToolBox:
    """Runs tool calls for one authenticated customer; returns JSON-ready dicts (``{"ok": False, "error": ...}``)."""

    def __init__(self, kg: KnowledgeGraph, backend: OrderBackend, customer_id: str, *,
                 clock: Callable[[], datetime] | None = None):
        if not customer_id:
            raise KefuError("ToolBox needs the authenticated customer_id")
        self.kg, self.backend, self.customer_id = kg, backend, customer_id
        self.clock = clock or (lambda: datetime.now(timezone.utc))

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
            return _error(_validation_message(name, exc))
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
        return _error(f"没有查到订单{number}（请核对订单号，或确认是用下单账号咨询）")

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
        from kefu.kg.recommend import recommend

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
    from kefu.safety import audit

    audit.record(action, obj, details=details)


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
