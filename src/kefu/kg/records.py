"""The knowledge graph's records as plain dataclasses (what the store returns and what retrieval/tools read), and how
a customer's colour or size word matches a product's."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

RELATIONS = ("compatible-with", "alternative-to", "accessory-of")
PLAYBOOK_TYPES = ("delay", "lost", "damaged", "address_change", "refused")
SIZE_RANGE = re.compile(r"[（(].*$")  # "L(40-43)", "M(56-58cm)": the size, then its range


@dataclass(slots=True)
class Product:
    """One SKU. ``variant_stock`` maps ``"颜色/尺码"`` to units when the catalogue gives stock per variant."""

    sku: str
    name: str
    category: str
    brand: str
    price_fen: int
    stock: int
    aliases: list[str] = field(default_factory=list)
    colors: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    material: str = ""
    style: str = ""
    description: str = ""
    variant_stock: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Relation:
    sku: str
    relation: str  # one of RELATIONS
    target_sku: str
    row: int = field(default=0, compare=False)  # CSV row it came from (0 when read back from the store)


@dataclass(slots=True)
class Policy:
    """After-sales policy of a category (``"*"`` is the shop default)."""

    category: str
    return_days: int
    exchange_days: int
    repair_days: int
    seven_day_no_reason: bool
    conditions: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    shipping_paid_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One Chinese line: windows, conditions, exceptions, who pays shipping."""
        parts = []
        if self.seven_day_no_reason:
            parts.append(f"支持{self.return_days}天无理由退货" if self.return_days else "支持7天无理由退货")
        elif self.return_days:
            parts.append(f"{self.return_days}天内可退货（不支持无理由）")
        else:
            parts.append("不支持无理由退货")
        if self.exchange_days:
            parts.append(f"{self.exchange_days}天内可换货")
        parts.append(f"{self.repair_days}天内保修" if self.repair_days else "不提供保修")  # 0 days: no repair
        text = "，".join(parts)
        if self.conditions:
            text += "；条件：" + "、".join(self.conditions)
        if self.exceptions:
            text += "；例外：" + "、".join(self.exceptions)
        if self.shipping_paid_by:
            text += f"；运费：{self.shipping_paid_by}"
        return text


@dataclass(slots=True)
class Playbook:
    """How to handle one logistics exception: steps, what may and may not be promised, when to escalate."""

    type: str
    steps: list[str] = field(default_factory=list)
    allowed_promises: list[str] = field(default_factory=list)
    forbidden_promises: list[str] = field(default_factory=list)
    escalate_after_hours: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ShipmentEvent:
    time: datetime
    status: str
    location: str = ""


@dataclass(slots=True)
class Shipment:
    carrier: str
    tracking_no: str
    events: list[ShipmentEvent] = field(default_factory=list)  # oldest first

    @property
    def latest(self) -> ShipmentEvent | None:
        return self.events[-1] if self.events else None


@dataclass(slots=True)
class OrderItem:
    sku: str
    quantity: int
    unit_price_fen: int


@dataclass(slots=True)
class Order:
    """One order; ``status`` is one of ``kefu.text.status.ORDER_STATUSES``."""

    order_no: str
    customer_id: str
    created_at: datetime
    status: str
    items: list[OrderItem]
    paid_fen: int
    shipment: Shipment | None = None

    @property
    def delivered_at(self) -> datetime | None:
        """When it was signed for (the first 签收 event), if it was."""
        if self.shipment:
            for event in self.shipment.events:
                if "签收" in event.status:
                    return event.time
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the schema's shape (what the HTTP order backend also returns)."""
        shipment = None
        if self.shipment:
            shipment = {"carrier": self.shipment.carrier, "tracking_no": self.shipment.tracking_no,
                        "events": [{"time": e.time.isoformat(), "status": e.status, "location": e.location}
                                   for e in self.shipment.events]}
        return {"order_no": self.order_no, "customer_id": self.customer_id, "created_at": self.created_at.isoformat(),
                "status": self.status, "items": [asdict(i) for i in self.items], "paid_fen": self.paid_fen,
                "shipment": shipment}


@dataclass(slots=True)
class FAQ:
    question: str
    answer: str
    intent: str = ""


def color_matches(query: str, color: str) -> bool:
    """Fuzzy-ish: 黑/黑色/黑的 match 黑色 and 曜石黑; 深蓝 matches 深蓝色; 藏蓝 matches 藏青."""
    q = query.rstrip("色的款")
    c = color.rstrip("色")
    if not q:
        return False
    if q in c or c in q:
        return True
    synonyms = {"藏蓝": "藏青", "藏青": "藏蓝", "橘": "橙", "咖": "棕"}
    return synonyms.get(q, "\0") in c


def size_matches(query: str, size: str) -> bool:
    """Case-insensitive, 码/号 and a bracketed range ignored (L matches ``L(40-43)``), 2XL = XXL and 3XL = XXXL."""
    aliases = {"2XL": "XXL", "3XL": "XXXL"}
    q = query.upper().strip().rstrip("码号")
    s = SIZE_RANGE.sub("", size.upper()).strip().rstrip("码号")
    return aliases.get(q, q) == aliases.get(s, s)
