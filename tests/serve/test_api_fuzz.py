"""Property-based fuzzing of the HTTP API with schemathesis (every operation of the served OpenAPI schema), and the
inputs that gave a 500 before, each now a 4xx with a clear message.

The app publishes its own request and response bodies (``kefu.serve.protocol``; ``/openapi.json``), so
schemathesis generates real bodies and checks every response against the declared schema: no 5xx, declared status
codes, content types and bodies, and that the Bearer key is really enforced (``ignored_auth``). The contract checks
with a deploy key (positive data acceptance included) are in test_schema.py. ``fuzz_app``, ``load_schema`` and
``OPERATIONS`` are also bench/api_fuzz_bench.py's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from kefu.safety.keys import KeyStore  # noqa: E402
from kefu.serve.gateway import Authenticator  # noqa: E402
from serve_support import API_KEY, make_service, tiny_model  # noqa: E402

# (path, method) -> (request model name or None, error statuses the operation declares)
AUTH_ERRORS = ["401", "403", "429"]
BODY_ERRORS = ["400", "413"]
OPERATIONS: dict[tuple[str, str], tuple[str | None, list[str]]] = {
    ("/v1/chat/completions", "post"): ("ChatCompletionRequest", AUTH_ERRORS + BODY_ERRORS + ["404"]),
    ("/v1/feedback", "post"): ("FeedbackRequest", AUTH_ERRORS + BODY_ERRORS),
    ("/v1/adapters", "post"): ("AdapterRequest", AUTH_ERRORS + BODY_ERRORS),
    ("/v1/customer_tokens", "post"): ("CustomerTokenRequest", AUTH_ERRORS + BODY_ERRORS),
    ("/v1/models", "get"): (None, AUTH_ERRORS),
    ("/healthz", "get"): (None, []),
    ("/static/{name}", "get"): (None, ["404"]),
}


def bare_schema(app) -> dict[str, Any]:
    """The served document without its request bodies: what FastAPI published before the protocol models (the
    bench's baseline)."""
    import copy

    doc = copy.deepcopy(app.openapi())
    for item in doc["paths"].values():
        for op in item.values():
            op.pop("requestBody", None)
    return doc


def fuzz_app(tiny, *, rate: float = 1e6, documented: bool = True, skip_known_bugs: bool = True,
             max_tokens_cap: int | None = 32):
    """The real app on the tiny model, with the rate limit lifted (fuzzing is a burst by design), serving its own
    schema. ``documented=False`` serves it without request bodies (the bench's baseline). ``skip_known_bugs`` and
    ``max_tokens_cap`` are kept for the bench's calls and do nothing now: no input is steered around (the known
    bugs are fixed) and each turn's length is capped by the server's token budget."""
    from kefu.serve.app import create_app
    from kefu.serve.gateway import TokenBucketLimiter

    app = create_app(make_service(tiny), auth=Authenticator([API_KEY], use_store=False),
                     limiter=TokenBucketLimiter(rate, int(rate)))
    if not documented:
        doc = bare_schema(app)
        app.openapi_schema, app.state.openapi_models = doc, list(app.state.service.models())
    return app


def load_schema(app):
    """schemathesis' view of the app, loaded in-process over ASGI."""
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def api_schema(tiny):
    return load_schema(fuzz_app(tiny))


def fuzz_operation(api_schema, path: str, method: str, *, max_examples: int, seed: int | None = 0,
                   on_case=None) -> int:
    """Run ``max_examples`` generated requests against one operation; raise on the first failed check.
    ``on_case(case, response)`` sees every exchange. Returns how many requests were sent."""
    from hypothesis import given, seed as hseed

    sent = 0
    strategy = api_schema[path][method.upper()].as_strategy()

    @settings(max_examples=max_examples, derandomize=seed is None, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=strategy)
    def check(case):
        nonlocal sent
        sent += 1
        response = case.call_and_validate(headers={"Authorization": f"Bearer {API_KEY}"})
        if on_case is not None:
            on_case(case, response)

    if seed is not None:
        check = hseed(seed)(check)
    check()
    return sent


# (The lazy ``schemathesis.pytest.from_fixture`` loader breaks on pytest 9 -- "'Function' object has no attribute
# '_nodeid'" -- so each operation drives schemathesis' hypothesis strategy itself.)
@pytest.mark.parametrize("path,method", sorted(OPERATIONS))
def test_fuzz_operation(api_schema, path, method):
    """Every operation: no 5xx, responses conform to the declared status codes, content types and schemas."""
    assert fuzz_operation(api_schema, path, method, max_examples=20) > 0


def test_the_served_schema_covers_every_api_route(tiny):
    """A new /v1 route must declare its body and errors (``_operation`` in kefu.serve.app)."""
    app = fuzz_app(tiny)
    routes = {(r.path, m.lower()) for r in app.routes if r.path.startswith("/v1/") for m in getattr(r, "methods", ())}
    assert routes <= set(OPERATIONS), f"undocumented routes: {sorted(routes - set(OPERATIONS))}"
    doc = app.openapi()
    for (path, method), (body, errors) in OPERATIONS.items():
        op = doc["paths"][path][method]
        assert set(errors) <= set(op["responses"]), (path, method)
        if body:
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{body}")
    ops = {(op.path, op.method) for op in (r.ok() for r in load_schema(app).get_all_operations())}
    assert {("/v1/chat/completions", "post"), ("/v1/models", "get"), ("/v1/feedback", "post"),
            ("/healthz", "get")} <= ops


def test_a_tiny_temperature_does_not_break_generation(tiny):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app(tiny)) as client:
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, json={
            "model": "tiny", "temperature": 1e-40, "messages": [{"role": "user", "content": "周末有人值班吗"}]})
    assert r.status_code == 200
    meta = r.json()["kefu"]
    assert meta["path"] == "full" and not meta["fallback"], meta


def test_a_non_latin1_session_id_is_not_a_server_error(tiny):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app(tiny)) as client:
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, json={
            "model": "tiny", "session_id": "会话-1", "messages": [{"role": "user", "content": "在吗"}]})
    assert r.status_code < 500


# ---------------------------------------------------------------------------- inputs that gave a 500 before
@pytest.fixture
def raw_client(tiny):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app(tiny), raise_server_exceptions=False) as client:
        client.headers.update({"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        yield client


@pytest.mark.parametrize("path,body,param,fragment", [
    # a lone surrogate: valid JSON text, but no Unicode string (the masker, hashing and headers cannot encode it)
    ("/v1/chat/completions", b'{"model":"tiny","messages":[{"role":"user","content":"\\ud800"}]}',
     "messages.0.content", "lone UTF-16 surrogate"),
    ("/v1/feedback", b'{"kind":"correction","session_id":"s","correction":"ok \\udfff"}', "correction",
     "lone UTF-16 surrogate"),
    # an integer over Python's 4300-digit conversion limit
    ("/v1/feedback", b'{"kind":"rating","session_id":"s","rating":' + b"9" * 5000 + b"}", None,
     "more than 4300 digits"),
    # found while fuzzing: JSON nested deeper than the parser's recursion limit (well inside the 64 KiB body limit)
    ("/v1/chat/completions", b"[" * 20000 + b"]" * 20000, None, "nested too deeply"),
    # (not a 500 before, but only by luck: NaN failed temperature's bound) NaN/Infinity are not JSON values
    ("/v1/chat/completions", b'{"model":"tiny","temperature":NaN,"messages":[{"role":"user","content":"hi"}]}',
     None, "NaN is not a JSON value"),
])
def test_inputs_that_gave_a_500_get_a_clear_400(raw_client, path, body, param, fragment):
    r = raw_client.post(path, content=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert fragment in error["message"] and error["param"] == param, error


@pytest.fixture
def deploy_client(tiny, kefu_home):
    from fastapi.testclient import TestClient

    from kefu.serve.app import create_app
    from kefu.serve.engine import LocalEngine

    admin, _ = KeyStore.open().create("admin", "ops")
    _, tok = tiny
    engine = LocalEngine(tiny_model(tok), tok, base_name="tiny", max_new_tokens=4)
    with TestClient(create_app(make_service(tiny, engine=engine), auth=Authenticator([])),
                   raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        yield client


def test_an_adapter_path_too_long_for_the_file_system_is_a_400(deploy_client, tmp_path):
    # 2000 characters (was refused by a 1000-character bound: now the bound is PATH_MAX); one name over NAME_MAX
    # (was a 500: OSError ENAMETOOLONG from the adapter check)
    for path in ("/" + "a" * 1999, str(tmp_path / ("b" * 900))):
        r = deploy_client.post("/v1/adapters", json={"name": "x", "path": path})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "path" and error["code"] == "invalid_adapter", error
        assert "too long" in error["message"], error


def test_an_adapter_with_corrupt_weights_is_a_400_and_the_server_goes_on(deploy_client, tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    _, tok = tiny
    folder = tmp_path / "broken"
    get_peft_model(tiny_model(tok), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    (folder / "adapter_model.safetensors").write_bytes(b"\x00garbage, not safetensors" * 8)
    assert json.loads((folder / "adapter_config.json").read_text())["target_modules"]  # a valid config
    r = deploy_client.post("/v1/adapters", json={"name": "broken", "path": str(folder)})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "path" and error["code"] == "invalid_adapter" and "weights" in error["message"], error
    assert [m["id"] for m in deploy_client.get("/v1/models").json()["data"]] == ["tiny"]
    ok = deploy_client.post("/v1/chat/completions", json={"model": "tiny", "messages": [
        {"role": "user", "content": "帮我推荐一款帐篷"}]})
    assert ok.status_code == 200, ok.text
