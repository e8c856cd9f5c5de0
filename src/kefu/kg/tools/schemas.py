"""Tool arguments as Pydantic models, and the OpenAI function-calling schemas built from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TICKET_KINDS = ("return", "exchange", "repair", "refund", "lost", "damaged", "delay", "address_change", "refused",
                "complaint")
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


def validation_message(name: str, exc: ValidationError) -> str:
    """A Pydantic error as one line the model can act on (unknown argument, malformed order number, ...)."""
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
