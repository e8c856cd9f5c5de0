"""Business tools: schemas, argument validation, customer scoping, the SQLite and HTTP order backends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kefu.kg.config import KGConfig
from kefu.kg.records import Order, OrderItem
from kefu.kg.tools import (TOOL_SCHEMAS, HTTPOrderBackend, OrderBackendError, SQLiteOrderBackend, ToolBox,
                           backend_from_config, return_eligibility)
from kefu.safety import audit
from kefu.types import KefuError

from .conftest import AT, CST

EXPECTED = {"get_order_status", "get_logistics", "compute_price", "check_return_eligibility", "recommend_products",
            "create_after_sales_ticket", "transfer_to_human"}


@pytest.fixture
def box(kg):
    return ToolBox(kg, SQLiteOrderBackend(kg), "C0001", clock=lambda: AT)


def test_schemas_are_openai_function_schemas():
    assert {s["function"]["name"] for s in TOOL_SCHEMAS} == EXPECTED
    for schema in TOOL_SCHEMAS:
        assert schema["type"] == "function" and schema["function"]["description"]
        params = schema["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        text = json.dumps(params)
        assert "$ref" not in text and "anyOf" not in text and '"title"' not in text
    price = next(s for s in TOOL_SCHEMAS if s["function"]["name"] == "compute_price")["function"]["parameters"]
    assert price["required"] == ["items"] and price["properties"]["items"]["items"]["required"] == ["sku"]


def test_own_order_status_and_logistics(box):
    result = box.call("get_order_status", {"order_no": "2026111012345678"})
    assert result["ok"] and result["order"]["status"] == "已发货" and result["order"]["paid"] == "549.00"
    assert result["order"]["items"][0]["name"] == "山岚风行冲锋衣"
    logistics = box.call("get_logistics", '{"tracking_no": "SF1234567890123"}')
    assert logistics["ok"] and [e["location"] for e in logistics["events"]] == ["杭州", "上海转运中心"]
    recent = box.call("get_order_status", {})
    assert [o["order_no"] for o in recent["orders"]] == ["2026111199990000", "2026111012345678"]


def test_customer_a_cannot_see_customer_b_orders(kg, box):
    other = "2026110511112222"  # C0002's order
    missing = "2026000000000000"
    for name, args in [("get_order_status", {"order_no": other}), ("get_logistics", {"order_no": other}),
                       ("get_logistics", {"tracking_no": "ZT9876543210"}),
                       ("check_return_eligibility", {"order_no": other}),
                       ("create_after_sales_ticket", {"order_no": other, "type": "return", "description": "不想要了"})]:
        result = box.call(name, args)
        assert result["ok"] is False and "没有查到订单" in result["error"], (name, result)
        for secret in ("C0002", "羊毛", "中通", "北京", "227", other):  # not even the number, said back normalised
            assert secret not in json.dumps(result, ensure_ascii=False)
    # someone else's order reads exactly like an order that does not exist
    assert box.call("get_order_status", {"order_no": other})["error"].replace(other, "N") == \
        box.call("get_order_status", {"order_no": missing})["error"].replace(missing, "N")
    assert all(o["order_no"] != other for o in box.call("get_order_status", {})["orders"])
    b = ToolBox(kg, SQLiteOrderBackend(kg), "C0002", clock=lambda: AT)
    assert b.call("get_order_status", {"order_no": other})["ok"]


def test_scoping_holds_even_if_the_backend_leaks(kg):
    class LeakyBackend(SQLiteOrderBackend):
        def get_order(self, order_no, customer_id):
            order = self.kg.order(order_no)
            return order.to_dict() if order else None  # ignores the customer: a buggy shop adapter

    box = ToolBox(kg, LeakyBackend(kg), "C0001")
    assert box.call("get_order_status", {"order_no": "2026110511112222"})["ok"] is False


def test_argument_validation_errors_are_clear(box):
    assert "order_no: must be a 16-digit order number" in box.call("get_order_status", {"order_no": "123"})["error"]
    assert "unknown argument" in box.call("get_order_status", {"order": "x"})["error"]
    assert "items.0.quantity" in box.call("compute_price", {"items": [{"sku": "SL-10001", "quantity": 0}]})["error"]
    assert "not valid JSON" in box.call("compute_price", "{items: ")["error"]
    assert "unknown tool" in box.call("delete_everything", {})["error"]
    assert "unknown SKU SL-00000" in box.call("compute_price", {"items": [{"sku": "SL-00000"}]})["error"]
    assert "give order_no or tracking_no" in box.call("get_logistics", {})["error"]
    assert "type" in box.call("create_after_sales_ticket", {"order_no": "2026111012345678", "type": "bribe",
                                                            "description": "xx"})["error"]


def test_compute_price_uses_promotions_in_force(box):
    result = box.call("compute_price", {"items": [{"sku": "SL-10003", "quantity": 1}, {"sku": "SL-10001"}],
                                        "coupon_codes": ["NEW10"]})
    assert result["ok"] and result["payable"] == "1233.15" and result["payable_fen"] == 123315
    assert [a["id"] for a in result["applied"]] == ["P003", "P004", "P001", "P005"]
    assert result["gifts"] == [{"sku": "SL-10006", "quantity": 1, "promotion_id": "P004"}]


def test_return_eligibility_windows_and_exceptions(kg):
    b = ToolBox(kg, SQLiteOrderBackend(kg), "C0002", clock=lambda: datetime(2026, 11, 12, 12, tzinfo=CST))
    result = b.call("check_return_eligibility", {"order_no": "2026110511112222"})
    items = {i["sku"]: i for i in result["items"]}
    assert items["SL-10005"]["returnable"] is True  # default policy, 4 days after sign-off
    assert items["SL-10006"]["returnable"] is False and "不支持7天无理由" in items["SL-10006"]["reasons"][0]
    late = ToolBox(kg, SQLiteOrderBackend(kg), "C0002", clock=lambda: datetime(2026, 11, 30, tzinfo=CST))
    items = {i["sku"]: i for i in late.call("check_return_eligibility", {"order_no": "2026110511112222"})["items"]}
    assert items["SL-10005"]["returnable"] is False and items["SL-10005"]["exchangeable"] is False
    quality = late.call("check_return_eligibility", {"order_no": "2026110511112222", "sku": "SL-10005",
                                                     "reason": "quality"})
    assert quality["items"][0]["returnable"] is False and len(quality["items"]) == 1
    a = ToolBox(kg, SQLiteOrderBackend(kg), "C0001", clock=lambda: AT)
    unsigned = a.call("check_return_eligibility", {"order_no": "2026111012345678"})
    assert unsigned["items"][0]["days_since_delivery"] is None and "尚未签收" in unsigned["items"][0]["reasons"][0]


def test_tickets_and_handoff_are_recorded(box):
    ticket = box.call("create_after_sales_ticket", {"order_no": "2026111012345678", "type": "damaged",
                                                    "description": "衣服拉链坏了", "sku": "SL-10001"})
    assert ticket["ok"] and ticket["ticket"]["ticket_id"].startswith("T")
    handoff = box.call("transfer_to_human", {"reason": "顾客要求投诉", "urgency": "high"})
    assert handoff["ok"] and handoff["transferred"]
    actions = [e["action"] for e in audit.entries()]
    assert actions[-2:] == ["kg.ticket", "kg.handoff"]
    wrong_item = box.call("create_after_sales_ticket", {"order_no": "2026111012345678", "type": "return",
                                                        "description": "退货", "sku": "SL-10005"})
    assert wrong_item["ok"] is False and "no item SL-10005" in wrong_item["error"]


def test_recommend_tool(box):
    result = box.call("recommend_products", {"category": "冲锋衣", "max_price_yuan": 700, "limit": 3})
    assert result["ok"] and [p["sku"] for p in result["products"]] == ["SL-10001"]  # SL-10002 is out of stock
    assert result["products"][0]["reasons"][0] == "品类：冲锋衣"


# ------------------------------------------------------------------------------------------------- HTTP backend
def mock_order_service(kg, api_key="secret", calls=None):
    """A tiny order service implementing the documented HTTP contract over the fixture orders."""

    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request)
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return httpx.Response(401)
        parts = request.url.path.strip("/").split("/")
        parts = parts[parts.index("customers"):] if "customers" in parts else []
        if len(parts) < 3:
            return httpx.Response(404)
        customer = parts[1]
        if parts[2] == "orders" and len(parts) == 4:
            order = kg.order(parts[3])
            return httpx.Response(200, json=order.to_dict()) if order and order.customer_id == customer else \
                httpx.Response(404)
        if parts[2] == "orders":
            limit = int(request.url.params.get("limit", 5))
            return httpx.Response(200, json={"orders": [o.to_dict() for o in kg.orders_of(customer, limit)]})
        if parts[2] == "shipments":
            order = kg.order_by_tracking(parts[3])
            return httpx.Response(200, json=order.to_dict()) if order and order.customer_id == customer else \
                httpx.Response(404)
        if parts[2] == "tickets" and request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(201, json={"ticket_id": "H-1", "kind": body["kind"], "order_no": body["order_no"]})
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_http_backend_follows_the_contract_and_scopes(kg):
    calls: list[httpx.Request] = []
    backend = HTTPOrderBackend("https://orders.example/api", api_key="secret", timeout=2.0,
                               transport=mock_order_service(kg, calls=calls))
    box = ToolBox(kg, backend, "C0001", clock=lambda: AT)
    assert box.call("get_order_status", {"order_no": "2026111012345678"})["order"]["status"] == "已发货"
    assert calls[-1].url.path == "/api/customers/C0001/orders/2026111012345678"
    assert box.call("get_order_status", {"order_no": "2026110511112222"})["ok"] is False
    assert box.call("get_logistics", {"tracking_no": "SF1234567890123"})["carrier"] == "顺丰速运"
    assert len(box.call("get_order_status", {})["orders"]) == 2
    ticket = box.call("create_after_sales_ticket", {"order_no": "2026111012345678", "type": "delay",
                                                    "description": "好几天没动"})
    assert ticket["ticket"]["ticket_id"] == "H-1" and calls[-1].method == "POST"


def test_http_backend_errors_become_tool_errors(kg):
    bad_key = HTTPOrderBackend("https://orders.example", api_key="wrong", transport=mock_order_service(kg))
    with pytest.raises(OrderBackendError, match="refused the API key"):
        bad_key.get_order("2026111012345678", "C0001")

    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    timeout = HTTPOrderBackend("https://orders.example", timeout=0.5, transport=httpx.MockTransport(slow))
    result = ToolBox(kg, timeout, "C0001").call("get_order_status", {"order_no": "2026111012345678"})
    assert result["ok"] is False and "timed out after 0.5s" in result["error"] and "订单系统暂时无法查询" in result["error"]
    broken = HTTPOrderBackend("https://orders.example", transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json={"order_no": "1"})))
    assert ToolBox(kg, broken, "C0001").call("get_order_status", {"order_no": "2026111012345678"})["ok"] is False
    down = HTTPOrderBackend("https://orders.example", transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(OrderBackendError, match="HTTP 503"):
        down.list_orders("C0001")


def test_http_backend_quotes_path_segments(kg):
    calls: list[httpx.Request] = []
    backend = HTTPOrderBackend("https://orders.example", api_key="secret", transport=mock_order_service(kg, calls=calls))
    assert backend.get_order("2026110511112222", "C0001/../C0002") is None  # C0002's order stays out of reach
    assert calls[-1].url.raw_path.decode() == "/customers/C0001%2F..%2FC0002/orders/2026110511112222"


def test_backend_from_config(kg, monkeypatch):
    assert isinstance(backend_from_config(kg, KGConfig()), SQLiteOrderBackend)
    monkeypatch.setenv("SHOP_KEY", "k-123")
    http = backend_from_config(kg, KGConfig(order_backend="http", order_api_url="https://o.example/",
                                            order_api_key_env="SHOP_KEY", order_api_timeout_s=1.5))
    assert isinstance(http, HTTPOrderBackend) and http.client.headers["authorization"] == "Bearer k-123"
    assert http.timeout == 1.5 and http.base_url == "https://o.example"
    with pytest.raises(KefuError, match="order_api_url"):
        backend_from_config(kg, KGConfig(order_backend="http"))


def test_signed_order_without_signoff_time_goes_to_a_human(kg):
    order = Order("2026111000000001", "C0001", AT, "已签收", [OrderItem("SL-10001", 1, 59900)], 59900, None)
    [item] = return_eligibility(kg, order, AT)
    assert item["returnable"] is False and "转人工" in item["reasons"][0]
