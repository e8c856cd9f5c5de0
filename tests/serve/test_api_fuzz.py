"""Property-based fuzzing of the HTTP API with schemathesis (every operation of the app's OpenAPI schema).

The app's handlers read the raw request (for their OpenAI-shaped errors and the body-size limit), so FastAPI's own
schema declares neither request bodies nor error responses. ``documented_schema`` adds them from the app's pydantic
models (ChatRequest, FeedbackRequest, AdapterRequest) and the OpenAI error shape, so schemathesis generates real
bodies and checks every response against a declared schema: no 5xx, declared status codes, content types and bodies,
and that the Bearer key is really enforced (``ignored_auth``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from serve_support import API_KEY, make_service  # noqa: E402

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
COMPLETION = {"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
    "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
    "model": {"type": "string"}, "kefu": {"type": "object"},
    "choices": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["index", "message"],
                "properties": {"message": {"type": "object", "required": ["role", "content"], "properties": {
                    "role": {"const": "assistant"}, "content": {"type": "string"}}}}}}}}
MODELS = {"type": "object", "required": ["object", "data"], "properties": {
    "object": {"const": "list"}, "data": {"type": "array", "items": {
        "type": "object", "required": ["id", "object"], "properties": {"id": {"type": "string"}}}}}}
FEEDBACK = {"type": "object", "required": ["id", "object", "status"], "properties": {
    "id": {"type": "integer"}, "object": {"const": "feedback"}, "status": {"const": "stored"}}}
HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
# Python's str.strip() (which the app uses) also strips \x1c-\x1f, which regex \S counts as visible
NOT_BLANK = "[^\\s\\x1c-\\x1f]"
# (path, method) -> (request model name or None, 200 body schema, error statuses the operation may answer)
AUTH_ERRORS = ["401", "403", "429"]
BODY_ERRORS = ["400", "413"]
OPERATIONS: dict[tuple[str, str], tuple[str | None, dict | None, list[str]]] = {
    ("/v1/chat/completions", "post"): ("ChatRequest", COMPLETION, AUTH_ERRORS + BODY_ERRORS + ["404"]),
    ("/v1/feedback", "post"): ("FeedbackRequest", FEEDBACK, AUTH_ERRORS + BODY_ERRORS),
    ("/v1/adapters", "post"): ("AdapterRequest", None, AUTH_ERRORS + BODY_ERRORS),
    ("/v1/models", "get"): (None, MODELS, AUTH_ERRORS),
    ("/healthz", "get"): (None, HEALTH, []),
    ("/static/{name}", "get"): (None, None, ["404"]),
}


def _model_schemas(models: list[str], skip_known_bugs: bool = True,
                   max_tokens_cap: int | None = 32) -> dict[str, dict[str, Any]]:
    """JSON schemas of the app's request models, with their $defs lifted into components; ``model`` must be one of
    the served ``models`` (else every request would end in the documented 404)."""
    from kefu.loop.feedback import HANDOFF_OUTCOMES
    from kefu.serve.app import ALLOWED_ROLES, AdapterRequest, ChatRequest, FeedbackRequest

    out: dict[str, dict[str, Any]] = {}
    for model in (ChatRequest, FeedbackRequest, AdapterRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    chat = out["ChatRequest"]["properties"]
    chat["model"] = {"enum": list(models)}
    # A session id outside latin-1 crashes the app (see test_a_non_latin1_session_id_is_not_a_server_error); keep the
    # fuzzer on ids that reach the rest of the handler until that is fixed.
    if skip_known_bugs:
        chat["session_id"]["anyOf"][0]["pattern"] = "^[ -~]*$"
    # The tiny test model has 512 positions: ``max_tokens_cap`` keeps generated lengths small (None: the app's bound).
    for field in ("max_tokens", "max_completion_tokens"):
        if max_tokens_cap is not None:
            chat[field]["anyOf"][0]["maximum"] = max_tokens_cap
    # Rules the handler checks beyond the pydantic model: known roles, text-only parts, one non-empty user turn.
    message = out["ChatMessage"]
    message["properties"]["role"] = {"enum": list(ALLOWED_ROLES)}
    message["properties"]["content"]["anyOf"][1]["items"] = {
        "type": "object", "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
    # ... and the feedback store's per-kind rules (kefu.loop.feedback.FeedbackRecord.validate).
    out["FeedbackRequest"]["allOf"] = [{"anyOf": [
        {"required": ["rating"], "properties": {"kind": {"const": "rating"}, "rating": {"enum": [-1, 1, 2, 3, 4, 5]}}},
        {"required": ["correction"], "properties": {"kind": {"const": "correction"},
                                                    "correction": {"type": "string", "pattern": NOT_BLANK}}},
        {"required": ["outcome"], "properties": {"kind": {"const": "handoff"},
                                                 "outcome": {"enum": sorted(HANDOFF_OUTCOMES)}}}]}]
    chat["messages"]["contains"] = {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"const": "user"}, "content": {"type": "string", "pattern": NOT_BLANK}}}
    return out


def documented_schema(app, *, skip_known_bugs: bool = True, max_tokens_cap: int | None = 32) -> dict[str, Any]:
    """The app's OpenAPI document plus request bodies, Bearer security and error responses (see module doc).
    ``skip_known_bugs`` keeps generation away from inputs of the xfail tests below (the bench turns it off)."""
    doc = copy.deepcopy(app.openapi())
    components = doc.setdefault("components", {})
    models = app.state.service.models()
    components.setdefault("schemas", {}).update(_model_schemas(models, skip_known_bugs, max_tokens_cap))
    components["schemas"]["Error"] = ERROR
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for (path, method), (body, ok, errors) in OPERATIONS.items():
        op = doc["paths"][path][method]
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        if path == "/static/{name}":
            op["parameters"][0]["schema"] = {"enum": ["app.js", "style.css"]}
        if path.startswith("/v1/"):
            op["security"] = [{"bearer": []}]
        op["responses"] = {"200": {"description": "ok"}}
        if ok is not None:
            content = {"application/json": {"schema": ok}}
            if path == "/v1/chat/completions":
                content["text/event-stream"] = {"schema": {"type": "object", "required": ["data"], "properties": {
                    "data": {"type": "string"}}}}
            op["responses"]["200"]["content"] = content
        for status in errors:
            op["responses"][status] = {"description": "error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
    return doc


def fuzz_app(tiny, *, rate: float = 1e6, documented: bool = True, skip_known_bugs: bool = True,
             max_tokens_cap: int | None = 32):
    """The real app on the tiny model, with the rate limit lifted (fuzzing is a burst by design). ``documented=False``
    keeps FastAPI's own schema (no request bodies): the bench's baseline."""
    from kefu.serve.app import create_app
    from kefu.serve.gateway import Authenticator, TokenBucketLimiter

    app = create_app(make_service(tiny), auth=Authenticator([API_KEY], use_store=False),
                     limiter=TokenBucketLimiter(rate, int(rate)))
    if documented:
        app.openapi_schema = documented_schema(app, skip_known_bugs=skip_known_bugs, max_tokens_cap=max_tokens_cap)
        # (FastAPI serves the cached document at /openapi.json)
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
    assert fuzz_operation(api_schema, path, method, max_examples=30) > 0


def test_documented_schema_covers_every_api_route(tiny):
    """The enrichment above must follow the app: a new /v1 route without a documented body fails here."""
    app = fuzz_app(tiny)
    routes = {(r.path, m.lower()) for r in app.routes if r.path.startswith("/v1/") for m in getattr(r, "methods", ())}
    assert routes <= set(OPERATIONS), f"undocumented routes: {sorted(routes - set(OPERATIONS))}"
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
