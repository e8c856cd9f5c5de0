"""schemathesis against the OpenAPI document the server publishes (``/openapi.json``, built from
``kefu.serve.protocol``): every request body and response is declared, and for the chat, models, feedback and adapter
operations generated valid requests give no 5xx, responses that conform to the declared status codes, content types
and schemas, and no 400 for a request the schema accepts (schemathesis' positive data acceptance).

The one rejection the schema cannot express: ``POST /v1/adapters`` reads a folder on the server, and a generated
``path`` is (almost) never an adapter folder -- those 400s (code ``invalid_adapter``) are allowed for that operation
only; any other 400 there still fails.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from kefu.safety.keys import KeyStore  # noqa: E402
from kefu.serve.gateway import Authenticator, TokenBucketLimiter  # noqa: E402
from serve_support import make_service  # noqa: E402

# operation -> generated examples (the whole module stays well under a minute on 2 cores)
OPERATIONS = {("/v1/chat/completions", "POST"): 40, ("/v1/feedback", "POST"): 30, ("/v1/adapters", "POST"): 15,
              ("/v1/models", "GET"): 5}
BODIES = {"/v1/chat/completions": "ChatCompletionRequest", "/v1/feedback": "FeedbackRequest",
          "/v1/adapters": "AdapterRequest"}


@pytest.fixture
def served(tiny, kefu_home):
    """The app on the tiny model with an admin key (chat, feedback:write, model:deploy), rate limit lifted."""
    from kefu.serve.app import create_app

    key, _ = KeyStore.open().create("admin", "schema-fuzz")
    app = create_app(make_service(tiny), auth=Authenticator([]), limiter=TokenBucketLimiter(1e6, 1_000_000))
    return app, key


def test_the_served_schema_declares_every_body_error_and_the_key(served):
    from fastapi.testclient import TestClient

    app, _ = served
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, model in BODIES.items():
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert {"200", "400", "401", "403", "413", "429"} <= set(op["responses"]), path
        assert op["security"] == [{"bearer": []}]
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert chat["application/json"]["schema"]["$ref"].endswith("/ChatCompletionResponse")
    assert "text/event-stream" in chat and "404" in doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    request = schemas["ChatCompletionRequest"]
    assert request["additionalProperties"] is False and request["properties"]["model"]["enum"] == ["tiny"]
    assert request["properties"]["tools"]["enum"] == [None, []]
    assert request["properties"]["n"]["anyOf"][0]["maximum"] == 4
    for name in ("ChatCompletionChunk", "Usage", "ModelList", "ErrorResponse", "FeedbackResponse"):
        assert name in schemas


def test_the_schema_follows_hot_loaded_models(served):
    """``model`` lists the served models; the document is rebuilt when an adapter joins them."""
    app, _ = served
    assert app.openapi()["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"] == ["tiny"]
    service = app.state.service
    service.engine.adapters["shop-v2"] = "/nowhere"  # what load_adapter records
    try:
        models = app.openapi()["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"]
        service.config.allow_base_model = False  # as kefu serve runs: the untuned base model is never offered
        tuned = app.openapi()["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"]
    finally:
        del service.engine.adapters["shop-v2"]
        service.config.allow_base_model = True
    assert models == ["tiny", "shop-v2"] and tuned == ["shop-v2"]


def _adapter_rejections_only(ctx, response, case):
    """The adapters operation's stand-in for positive data acceptance: a 400 only for a path that is no adapter."""
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["code"] == "invalid_adapter" and error["param"] == "path", error


@pytest.mark.parametrize("path,method", sorted(OPERATIONS))
def test_schemathesis_on_the_served_schema(served, path, method):
    app, key = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]
    statuses: list[int] = []
    excluded = [positive_data_acceptance] if path == "/v1/adapters" else []
    extra = [_adapter_rejections_only] if path == "/v1/adapters" else []

    @seed(0)
    @settings(max_examples=OPERATIONS[(path, method)], deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=operation.as_strategy(), stream=st.sampled_from([None, "plain", "usage"]))
    def run(case, stream):
        # hypothesis seldom sets the optional ``stream``: half the chat cases are streamed (still schema-valid)
        if path == "/v1/chat/completions" and stream is not None:
            case.body["stream"] = True
            if stream == "usage":
                case.body["stream_options"] = {"include_usage": True}
        response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded,
                                          additional_checks=extra)
        statuses.append(response.status_code)

    run()
    assert statuses and all(s < 500 for s in statuses)
    if path != "/v1/adapters":  # valid data is accepted: the requests got through
        assert statuses.count(200) >= len(statuses) // 2, statuses
