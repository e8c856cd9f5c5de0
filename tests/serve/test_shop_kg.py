"""The pipeline on the real sample-shop knowledge graph (KG stage): grounded light answers, per-customer orders,
price grounding of a model draft. Skips when the sample shop has not been generated."""

import asyncio
import json

import pytest

from serve_support import REPO_SHOP, make_service

pytestmark = pytest.mark.skipif(not (REPO_SHOP / "products.csv").exists(), reason="sample shop not generated")


@pytest.fixture(autouse=True)
def _in_the_promotion_month(shop_time):
    """Prices below are the sample shop's in November 2026, whatever today's date."""


class DraftEngine:
    """Stands in for the model with a fixed draft (a wrong price), to check grounding end to end."""

    name = "draft"

    def __init__(self, draft):
        self.draft = draft

    def models(self):
        return ["tiny"]

    async def stream(self, messages, **kwargs):
        self.prompt = messages
        for piece in self.draft:
            yield piece

    async def close(self):
        pass


def svc(tiny, kg, engine=None):
    from kefu.kg.tools import SQLiteOrderBackend

    return make_service(tiny, engine=engine, kg=kg, order_backend=SQLiteOrderBackend(kg), retriever=None,
                        order_lookup=None)


def ask(service, text, **kw):
    return asyncio.run(service.answer([{"role": "user", "content": text}], **kw))


def test_orders_are_answered_only_for_their_customer(tiny, shop_kg):
    order = json.loads((REPO_SHOP / "orders.json").read_text("utf-8"))[0]
    service = svc(tiny, shop_kg)
    mine = ask(service, f"订单{order['order_no']}到哪了", customer_id=order["customer_id"])
    other = ask(service, f"订单{order['order_no']}到哪了", customer_id="C9999")
    assert mine.path == "light" and order["status"] in mine.text
    assert order["status"] not in other.text and "没有查到" in other.text


def test_a_return_request_gets_the_live_order_and_the_windows_of_what_it_holds(tiny, shop_kg):
    """"我要退货 订单X": the order tool's live status, then the return windows of the order's categories from the
    KG — every fact from the shop, none from a model."""
    order = next(o for o in json.loads((REPO_SHOP / "orders.json").read_text("utf-8")) if o["status"] == "已签收")
    service = svc(tiny, shop_kg, DraftEngine("亲，30天内都可以退哦。"))
    reply = ask(service, f"我要退货 订单{order['order_no']}", customer_id=order["customer_id"])
    assert reply.path == "light" and reply.reason == "order tool"
    assert reply.text.startswith(f"您的订单（尾号{order['order_no'][-4:]}）当前状态：已签收")
    assert "天无理由退货" in reply.text and "30天" not in reply.text
    other = ask(service, f"我要退货 订单{order['order_no']}", customer_id="C9999")
    assert "没有查到" in other.text and "已签收" not in other.text and "无理由" not in other.text


def test_wrong_price_in_a_draft_is_replaced_by_the_kg_fact(tiny, shop_kg):
    engine = DraftEngine("这款珠峰800蓬鹅绒羽绒服现在只要999元，是全网最好的羽绒服。")
    service = svc(tiny, shop_kg, engine)

    service.router.light_path = False  # force the model path for this check
    reply = ask(service, "SL-10121现在多少钱")
    assert "999" not in reply.text and "¥1239.15" in reply.text
    assert "最好" not in reply.text
    assert any("1599" in m["content"] for m in engine.prompt if m["role"] == "system")  # facts were in the prompt
