"""Fixtures for the serve tests: a tiny random model, a fake KG/tool layer, the app, a live uvicorn server."""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model, tiny_tokenizer  # noqa: E402

API_KEY = "test-key-0123456789abcdef"


@dataclass
class FakeFacts:
    entities: list[dict[str, Any]] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)
    prompt_block: str = ""
    answer: str | None = None


PRODUCTS = {"SL-10001": ("山岚冲锋衣", 39900), "SL-10002": ("轻量羽绒服", 59900)}
ORDERS = {"1234567890123456": ("C0001", "已发货"), "6543210987654321": ("C0002", "待发货")}


def fake_retriever(text: str, customer_id: str | None):
    """A stand-in for kefu.kg.retrieval.retrieve over two products and one FAQ entry."""
    for sku, (name, price) in PRODUCTS.items():
        if sku in text or name in text:
            ent = {"sku": sku, "name": name, "price_fen": price}
            block = f"{name}（{sku}）价格 ¥{price // 100}"
            answer = f"{name}的价格是¥{price // 100}。" if ("多少钱" in text or "价格" in text) else None
            return FakeFacts([ent], [], block, answer)
    if "发票" in text:
        return FakeFacts([], [], "下单后可在订单详情申请电子发票", "您可以在订单详情页申请电子发票。")
    return FakeFacts()


def fake_order_lookup(order_no: str, customer_id: str | None, text: str):
    owner, status = ORDERS.get(order_no, (None, None))
    if owner is None:
        return {"error": "没有找到这个订单号，请核对。"}
    if owner != customer_id:
        return {"error": "这个订单不属于当前账号，无法查询。"}
    return {"order_no": order_no, "status": status, "paid_fen": 39900}


@pytest.fixture(scope="session")
def tiny():
    tok = tiny_tokenizer()
    return tiny_model(tok), tok


def make_service(tiny, *, engine=None, config_overrides: dict | None = None, feedback=True, **kwargs):
    from kefu.loop.feedback import FeedbackStore
    from kefu.serve.config import ServeConfig
    from kefu.serve.engine import LocalEngine
    from kefu.serve.pipeline import ChatService

    config = ServeConfig(**{"max_new_tokens": 8, "batch_wait_ms": 5, **(config_overrides or {})})
    if engine is None:
        model, tok = tiny
        engine = LocalEngine(model, tok, base_name="tiny", max_new_tokens=config.max_new_tokens,
                             batch_wait_ms=config.batch_wait_ms, max_batch_size=config.max_batch_size)
    kwargs.setdefault("retriever", fake_retriever)
    kwargs.setdefault("order_lookup", fake_order_lookup)
    return ChatService(engine, config=config, feedback=FeedbackStore.open() if feedback else None,
                       base_model="tiny", **kwargs)


@pytest.fixture
def service(tiny):
    return make_service(tiny)


@pytest.fixture
def app(service):
    from kefu.serve.app import create_app
    from kefu.serve.gateway import Authenticator

    return create_app(service, auth=Authenticator([API_KEY], use_store=False))


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {API_KEY}"
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app):
    """The app on a real uvicorn at 127.0.0.1:<free port>, in a thread."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)
