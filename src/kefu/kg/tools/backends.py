"""Order backends: the shop's order system behind the tools, always asked on behalf of one customer.

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

import os
import uuid
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from sqlalchemy.orm import Session

from kefu.kg.config import KGConfig
from kefu.kg.store import KnowledgeGraph, TicketRow
from kefu.types import KefuError


class OrderBackendError(KefuError):
    """The order system could not answer (down, timed out, bad reply)."""


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
    cfg = config or KGConfig()
    if cfg.order_backend == "sqlite":
        return SQLiteOrderBackend(kg)
    if not cfg.order_api_url:
        raise KefuError("kg.order_backend is http but kg.order_api_url is not set")
    return HTTPOrderBackend(cfg.order_api_url, api_key=os.environ.get(cfg.order_api_key_env),
                            timeout=cfg.order_api_timeout_s)
