"""Fixtures for the serve tests: a tiny random model, a fake KG/tool layer, the app, a live uvicorn server."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kefu.serve.gateway import Authenticator  # noqa: E402
from serve_support import API_KEY, make_service, tiny_model, tiny_tokenizer  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny():
    tok = tiny_tokenizer()
    return tiny_model(tok), tok


@pytest.fixture
def service(tiny):
    return make_service(tiny)


@pytest.fixture
def app(service):
    from kefu.serve.app import create_app  # deferred: heavy (fastapi)

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
