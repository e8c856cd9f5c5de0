"""Fixtures for the serve tests: a tiny random model, a fake KG/tool layer, the app, a live uvicorn server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kefu.serve.gateway import Authenticator  # noqa: E402
from serve_support import API_KEY, live_uvicorn, make_service, tiny_model, tiny_tokenizer  # noqa: E402,F401


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


@pytest.fixture
def live_server(app):
    """The app on a real uvicorn at 127.0.0.1:<free port>, in a thread."""
    with live_uvicorn(app) as url:
        yield url
