"""Business tools the model may call (OpenAI function-calling schemas), each scoped to the authenticated customer,
behind an ``OrderBackend`` a shop replaces with its own order system."""

from __future__ import annotations

from typing import Any, Protocol

from kefu.kg.store import KnowledgeGraph

TOOL_SCHEMAS: list[dict] = []


class OrderBackend(Protocol):
    """The shop's order system, always asked on behalf of one customer: an order that is not theirs is None."""

    def get_order(self, order_no: str, customer_id: str) -> dict | None: ...
    def list_orders(self, customer_id: str, limit: int = 5) -> list[dict]: ...
    def find_by_tracking(self, tracking_no: str, customer_id: str) -> dict | None: ...
    def create_ticket(self, customer_id: str, kind: str, order_no: str | None, details: dict) -> dict: ...


class ToolBox:
    """Runs tool calls for one authenticated customer; returns JSON-ready dicts (``{"ok": False, "error": ...}``)."""

    def __init__(self, kg: KnowledgeGraph, backend: OrderBackend, customer_id: str):
        self.kg, self.backend, self.customer_id = kg, backend, customer_id

    def call(self, name: str, arguments: dict | str) -> dict:
        raise NotImplementedError
