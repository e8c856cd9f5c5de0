"""The HTTP app: OpenAI-compatible chat completions (plain and SSE streaming), models, feedback, adapters, customer
tokens, health, metrics, and the web chat page. Request and response bodies are the typed models of
``kefu.serve.protocol``; the published OpenAPI document (``/openapi.json``) declares every body, error and the Bearer
key. Errors use OpenAI's JSON shape so the official client raises its usual exceptions.

Security (docs/security.md): every 401 and 403, and the 404 for a session that is not the caller's, is written to
the audit log (``access.denied``: the path, the key id when one is known -- never a secret -- and the reason); a chat
turn runs ``acting_as`` its caller, so what it audits (tool calls) names the key; sessions are made by the server and
bound to (key, customer); customer data needs a verified customer (a customer token, a customer-bound key, or a key
with ``customer:assert`` naming the customer).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Callable, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from kefu.artifacts.run import ADAPTER_CONFIG
from kefu.safety import audit
from kefu.safety.keys import CUSTOMER_TOKEN_TTL_S, acting_as
from kefu.serve.engine.base import StopText
from kefu.serve.gateway import AuthFailure, Authenticator, Caller, TokenBucketLimiter
from kefu.serve.pipeline import ChatService
from kefu.serve.protocol import (ALLOWED_ROLES, AdapterRequest, ChatCompletionRequest, CustomerTokenRequest,
                                 FeedbackRequest, openapi_components)
from kefu.serve.shared_state import rate_limiter
from kefu.train.models import check_adapter
from kefu.types import KefuError

__all__ = ["ALLOWED_ROLES", "AdapterRequest", "ApiError", "ChatCompletionRequest", "FeedbackRequest", "create_app"]

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An OpenAI-shaped error response. ``audit``: what the audit log records about a refusal (``reason``,
    ``key_id``, ``actor``...); every 401 and 403 is audited, with or without it."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None,
                 audit: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}
        self.audit = audit


AUDITED = (401, 403)


def audit_refusal(request: Request, exc: ApiError) -> dict[str, Any]:
    """The ``access.denied`` entry of a refused request: the method and path, the status, the key id when known (a
    key's id is not secret; its secret never reaches this point), the reason and the client's address."""
    info = dict(exc.audit or {})
    actor = info.pop("actor", None)
    key_id = info.pop("key_id", None)
    details = {"status": exc.status, "path": request.url.path, "method": request.method, "key_id": key_id,
               "reason": info.pop("reason", exc.message), "code": exc.code,
               "client": request.client.host if request.client else None, **info}
    return audit.record("access.denied", f"{request.method} {request.url.path}",
                        actor=actor or (f"key:{key_id}" if key_id else "anonymous"), details=details)


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


# pydantic error types of the protocol models that become the error's ``code``
_ERROR_CODES = {"unsupported_parameter": "unsupported_parameter", "invalid_role": "invalid_role",
                "unsupported_content": "unsupported_content", "extra_forbidden": "unknown_parameter"}


_TYPE_MISMATCH = {"string_type", "list_type", "dict_type", "int_type", "int_parsing", "float_type", "float_parsing",
                  "bool_type", "bool_parsing", "model_type", "model_attributes_type", "none_required"}


def _field_path(loc: tuple) -> list:
    """An error's location without pydantic's union-branch tags (``stop.str``, ``content.list[TextPart]``)."""
    return [p for p in loc if not (isinstance(p, str) and (p in ("str", "int", "float", "bool") or "[" in p
                                                            or p.startswith("function-")))]


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem of a request body, as a 400 naming the parameter (OpenAI's wording for unknown ones).
    Of a union's failed branches (``stop``: a string or a list) the one that says most is reported: a broken bound
    before "should be a valid string", else the deepest."""
    errors = exc.errors()
    field = _field_path(errors[0]["loc"])[:1]
    same = [e for e in errors if _field_path(e["loc"])[:1] == field]
    first = next((e for e in same if e["type"] not in _TYPE_MISMATCH), None) or \
        max(same, key=lambda e: len(_field_path(e["loc"])))
    loc = ".".join(str(p) for p in _field_path(first["loc"])) or str((first.get("ctx") or {}).get("field", ""))
    kind = first["type"]
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {loc}"
    elif kind == "unsupported_parameter" and len(first["loc"]) == 1:
        message = first["msg"]
    else:
        message = f"{loc}: {first['msg']}" if loc else first["msg"]
    return ApiError(400, message, param=loc or None, code=_ERROR_CODES.get(kind))


def parse(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _lone_surrogate(data: Any) -> str | None:
    """Where ``data`` holds a string with a lone UTF-16 surrogate (JSON's "\\ud800": not Unicode text, and no
    encoder downstream accepts it), else None."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return where or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((f"{where}.{key}" if where else str(key), key))
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), item) for i, item in enumerate(value))
    return None


def _operation(body: str | None, ok: str | None, errors: tuple[int, ...], *, stream: bool = False) -> dict[str, Any]:
    """The OpenAPI operation for a route that reads its body itself (``read_json``: the size limit, OpenAI-shaped
    errors): the request body, the 200 body and the errors, as references to ``openapi_components``."""
    op: dict[str, Any] = {"responses": {}}
    if ok is not None:
        content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok}"}}}
        if stream:
            content["text/event-stream"] = {"schema": {  # one event
                "type": "object", "required": ["data"], "description": "with stream: true, server-sent events "
                "`data: <ChatCompletionChunk JSON>`, the last one `data: [DONE]`",
                "properties": {"data": {"anyOf": [{"const": "[DONE]"}, {
                    "type": "string", "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}]}}}}
        op["responses"]["200"] = {"description": "OK", "content": content}
    for status in errors:
        response: dict[str, Any] = {"description": _ERRORS[status], "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        if status == 429:
            response["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
        op["responses"][str(status)] = response
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    if 401 in errors:
        op["security"] = [{"bearer": []}]
    return op


_ERRORS = {400: "invalid request (the parameter is named in error.param)",
           401: "missing or unknown API key, or an invalid or expired customer token",
           403: "the key lacks the permission, or may not act for this customer",
           404: "no such model (model_not_found), session (session_not_found: not this key's and customer's) or file",
           413: "request body over the size limit",
           429: "rate limit exceeded (Retry-After)"}
AUTH = (401, 403, 429)
BODY = (400, 413)


class StopCut:
    """One choice's text cut at the first of the request's stop strings (never sent), whatever path answered."""

    def __init__(self, stops: list[str]):
        self.text = StopText(stops) if stops else None

    def feed(self, piece: str) -> str:
        return self.text.feed(piece) if self.text is not None else piece

    def flush(self) -> str:
        return self.text.flush() if self.text is not None else ""

    @property
    def stopped(self) -> bool:
        return self.text is not None and self.text.stopped


async def _one_choice(events: AsyncIterator[dict[str, Any]], stops: list[str]):
    """One ``ChatService.respond`` stream as ("meta", reply), ("delta", text, replaces)..., ("done", reply,
    finish_reason, text): the text cut at the request's stop strings (the light path's text too), "stop" when cut
    there; ``replaces``: this piece stands instead of the pieces streamed before it (a late verification failure)."""
    cut, sent = StopCut(stops), []
    try:
        async for event in events:
            if event["type"] == "meta":
                yield ("meta", event["reply"])
            elif event["type"] == "delta":
                piece = cut.feed(event["text"])
                if piece:
                    sent.append(piece)
                    yield ("delta", piece, bool(event.get("replaces")))
            elif event["type"] == "done":
                rest = cut.flush()
                if rest:
                    sent.append(rest)
                    yield ("delta", rest, False)
                reply = event["reply"]
                yield ("done", reply, "stop" if cut.stopped else (reply.finish_reason or "stop"), "".join(sent))
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()  # a client that left stops the turn (and its generation)


async def _choices(start: Callable[[bool], AsyncIterator[dict[str, Any]]], n: int, sampling: bool,
                   stops: list[str]):
    """The ``n`` choices of a request as (indexes, item): a greedy (or light, cached, handed-off) answer is the same
    for every index, so it is generated once and given to all; a sampled model answer (temperature > 0) is sampled
    again for each further index (``respond(sample=True)``: the session is not recorded twice). All metas come
    first, then each choice's deltas and done."""
    first = _one_choice(start(False), stops)
    runs = []
    try:
        meta = await anext(first)
        if n > 1 and sampling and meta[1].path == "full":
            runs.append((first, (0,), meta))
            for i in range(1, n):
                other = _one_choice(start(True), stops)
                runs.append((other, (i,), await anext(other)))
        else:
            runs.append((first, tuple(range(n)), meta))
        for _, indexes, meta in runs:
            yield indexes, meta
        for run, indexes, _ in runs:
            async for item in run:
                yield indexes, item
    finally:
        for run in [first] + [r for r, _, _ in runs]:
            await run.aclose()


def create_app(service: ChatService, *, auth: Authenticator | None = None,
               limiter: TokenBucketLimiter | None = None) -> FastAPI:
    """The FastAPI app around ``service``. ``auth=None`` means keys from ``$KEFU_API_KEY``/the key store;
    ``limiter=None`` the state backend's rate limits (in process, or global across replicas in Redis)."""
    config = service.config
    auth = auth or Authenticator(enabled=config.auth)
    limiter = limiter or rate_limiter(config)
    metrics = service.metrics

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # What is loaded by now (model modules, tokenizer, router, knowledge-graph snapshot) lives as long as the
        # server: move it out of the cyclic collector's generations, so that an occasional full collection does not
        # walk all of it in the middle of a light-path request (tens of milliseconds of tail latency).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()

    app = FastAPI(title="kefu", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service, app.state.auth, app.state.limiter = service, auth, limiter

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        if exc.status in AUDITED or exc.audit is not None:
            from starlette.concurrency import run_in_threadpool

            metrics.requests.labels(request.url.path, "none", str(exc.status)).inc()
            await run_in_threadpool(audit_refusal, request, exc)  # fsync: off the event loop
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                              headers=exc.headers)

    @app.exception_handler(KefuError)
    async def _kefu_error(_request: Request, exc: KefuError):
        return error_response(400, str(exc))

    def caller(request: Request, permission: str) -> Caller:
        try:
            who = auth.check(request.headers.get("authorization"))
        except AuthFailure as exc:
            raise ApiError(401, exc.message, code=exc.code, headers={"WWW-Authenticate": "Bearer"},
                           audit={"reason": exc.reason, "key_id": exc.key_id}) from None
        if not who.can(permission):
            raise ApiError(403, f"this {'customer token' if who.token else 'key'} ({who.name}) lacks the permission "
                                f"{permission}", type="permission_error", code="permission_denied",
                           audit={"reason": f"lacks {permission}", "key_id": who.id, "actor": who.acting.actor,
                                  "permission": permission})
        wait = limiter.acquire(who.rate_key)
        if wait > 0:
            metrics.rate_limited.inc()
            metrics.requests.labels(request.url.path, "none", "429").inc()
            raise ApiError(429, f"rate limit exceeded for this key; retry in {wait:.2f}s", type="rate_limit_error",
                           code="rate_limit_exceeded", headers={"Retry-After": str(max(1, round(wait)))})
        return who

    async def read_json(request: Request) -> Any:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}", code="body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        try:
            data = json.loads(bytes(body).decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError as exc:
            raise ApiError(400, "request body is not valid JSON: nested too deeply", code="invalid_json") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, an integer over 4300 digits
            reason = ("a number has more than 4300 digits" if "integer string conversion" in str(exc) else str(exc))
            raise ApiError(400, f"request body is not valid JSON: {reason}", code="invalid_json") from exc
        where = _lone_surrogate(data)
        if where is not None:
            raise ApiError(400, f"{where}: the string holds a lone UTF-16 surrogate (such as \\ud800), which is not "
                                "Unicode text; send UTF-8 text", param=where, code="invalid_unicode")
        return data

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the protocol models; ``model`` lists the models served now (hot-loaded adapters
        included: the document is rebuilt when they change)."""
        models = list(service.models())
        if app.openapi_schema is None or app.state.openapi_models != models:
            app.openapi_schema = None
            doc = FastAPI.openapi(app)
            components = doc.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(openapi_components())
            schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] = models
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description":
                                                        "a key from $KEFU_API_KEY or `kefu keys create`"}}
            app.openapi_schema, app.state.openapi_models = doc, models
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", openapi_extra=_operation(None, "HealthResponse", ()))
    async def healthz():
        return {"status": "ok", "engine": getattr(service.engine, "name", None), "models": service.models(),
                "kg_version": service.kg_version(), "sessions": len(service.sessions), "cache_entries": len(service.cache)}

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", openapi_extra=_operation(None, "ModelList", AUTH))
    async def list_models(request: Request):
        caller(request, "chat")
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "kefu"}
                                           for m in service.models()]}

    @app.post("/v1/chat/completions", openapi_extra=_operation("ChatCompletionRequest", "ChatCompletionResponse",
                                                               AUTH + BODY + (404,), stream=True))
    async def chat_completions(request: Request):
        who = caller(request, "chat")
        req = parse(ChatCompletionRequest, await read_json(request))
        if req.model not in service.models():
            raise ApiError(404, f"The model {req.model!r} does not exist; available: {', '.join(service.models())}",
                           param="model", code="model_not_found")
        customer = customer_of(who, req.customer_id or req.user)
        session_id = session_of(request, who, req.session_id, customer)
        messages, stops, n = req.texts(), req.stops(), req.n or 1
        temperature = req.temperature or 0.0

        def start(sample: bool) -> AsyncIterator[dict[str, Any]]:
            return service.respond(messages, caller_id=who.id, session_id=session_id, customer_id=customer,
                                   model=req.model, max_tokens=req.max_completion_tokens or req.max_tokens,
                                   temperature=temperature, stop=stops or None, sample=sample,
                                   held=not req.stream)

        choices = _choices(start, n, temperature > 0, stops)
        prompt = "\n".join(m["content"] for m in messages)
        created = int(time.time())
        session_header = {"X-Kefu-Session": quote(session_id, safe="")}
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(choices, req.model, created, prompt, usage, who), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **session_header})
        done: dict[int, tuple] = {}
        with acting_as(who.acting):  # what the turn audits (tool calls) names this key
            async for indexes, item in choices:
                if item[0] == "done":
                    done.update((i, item) for i in indexes)
        first = done[0][1]
        return JSONResponse({
            "id": first.message_id, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": done[i][3]},
                         "finish_reason": done[i][2], "logprobs": None} for i in range(n)],
            "usage": _usage(first, prompt, [(done[i][1], done[i][3]) for i in range(n)]),
            "kefu": first.meta(staff=who.can("feedback:read")),
        }, headers={"X-Kefu-Path": first.path, **session_header})

    def customer_of(who: Caller, requested: str | None) -> str | None:
        """The verified customer of a request (``Caller.customer``); a bound key or token naming another: 403."""
        try:
            return who.customer(requested)
        except PermissionError as exc:
            raise ApiError(403, str(exc), type="permission_error", param="customer_id", code="customer_mismatch",
                           audit={"reason": "names another customer than its own", "key_id": who.id,
                                  "actor": who.acting.actor}) from exc

    def session_of(request: Request, who: Caller, requested: str | None, customer: str | None) -> str:
        """The request's session id: a new server-made session when none is sent; the one sent when it is this
        key's and this customer's, else 404 -- the same answer for unknown, expired and someone else's sessions,
        so an id reveals nothing -- written to the audit log."""
        if not requested:
            return service.sessions.create(who.id, customer).id
        if service.sessions.find(who.id, requested, customer) is not None:
            return requested
        elsewhere = service.sessions.held_elsewhere(who.id, requested, customer)
        raise ApiError(404, "no such session for this key and customer (it may have expired): leave session_id out "
                            "to start a new one", param="session_id", code="session_not_found",
                       audit={"reason": "session of another key or customer" if elsewhere
                              else "unknown or expired session", "key_id": who.id, "actor": who.acting.actor,
                              "session": hashlib.sha256(requested.encode("utf-8", "replace")).hexdigest()[:16]})

    def _usage(first, prompt: str, answers: list[tuple[Any, str]]) -> dict[str, int]:
        """Token counts: the engine's for a model answer, else the served tokenizer's count of the request's
        messages and of each choice's text (the light path, cache, handoffs)."""
        prompt_tokens = first.prompt_tokens if first.prompt_tokens is not None else service.count_tokens(prompt)
        completion = sum(reply.completion_tokens if reply.completion_tokens is not None
                         else service.count_tokens(text) for reply, text in answers)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    async def _sse(choices, model: str, created: int, prompt: str, include_usage: bool, who: Caller):
        message_id, finished = None, {}

        def chunk(index: int | None, delta: dict[str, Any], finish: str | None = None,
                  extra: dict[str, Any] | None = None) -> str:
            body = {"id": message_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [] if index is None else [{"index": index, "delta": delta, "finish_reason": finish,
                                                          "logprobs": None}]}
            if include_usage:
                body["usage"] = None
            if extra:
                body.update(extra)
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        # the stream runs in the server's response task, after the route returned: the turn acts as its caller here
        # (this generator is driven by that one task from start to close, so the context is set and reset there)
        staff = who.can("feedback:read")  # operators see the facts an answer rests on; customers do not
        try:
            with acting_as(who.acting):
                async for indexes, item in choices:
                    if item[0] == "meta":
                        message_id = message_id or item[1].message_id
                        for i in indexes:
                            yield chunk(i, {"role": "assistant", "content": ""},
                                        extra={"kefu": item[1].meta(staff=staff)})
                    elif item[0] == "delta":  # kefu.replaces_sent: a client may show this instead of what came before
                        for i in indexes:
                            yield chunk(i, {"content": item[1]},
                                        extra={"kefu": {"replaces_sent": True}} if item[2] else None)
                    elif item[0] == "done":
                        for i in indexes:
                            finished[i] = (item[1], item[3])
                            yield chunk(i, {}, item[2], extra={"kefu": item[1].meta(staff=staff)})
                if include_usage and finished:
                    yield chunk(None, {}, extra={"usage": _usage(finished[0][0], prompt,
                                                                 [finished[i] for i in sorted(finished)])})
                yield "data: [DONE]\n\n"
        finally:
            await choices.aclose()

    @app.post("/v1/feedback", openapi_extra=_operation("FeedbackRequest", "FeedbackResponse", AUTH + BODY))
    async def feedback(request: Request):
        who = caller(request, "feedback:write")
        req = parse(FeedbackRequest, await read_json(request))
        data = req.model_dump()
        source = data.pop("source")
        data["customer_id"] = customer_of(who, req.customer_id)  # the session is looked up as the chat made it
        from starlette.concurrency import run_in_threadpool

        # the durable commit (fsync) runs off the event loop so streaming answers are not held up
        feedback_id = await run_in_threadpool(service.add_feedback, data, caller_id=who.id, source=source)
        metrics.requests.labels("/v1/feedback", req.kind, "ok").inc()
        return {"id": feedback_id, "object": "feedback", "status": "stored"}

    @app.post("/v1/customer_tokens", openapi_extra=_operation("CustomerTokenRequest", "CustomerTokenResponse",
                                                              AUTH + BODY))
    async def customer_token(request: Request):
        """The shop's server says who its logged-in customer is: a signed token (HMAC-SHA256 with the key store's
        secret; default 1 h) that the customer's widget sends as ``Authorization: Bearer <token>``. Needs
        ``customer:assert`` (admin, shop-backend); audited as ``customer_token.create``."""
        who = caller(request, "customer:assert")
        req = parse(CustomerTokenRequest, await read_json(request))
        ttl = req.ttl_s or CUSTOMER_TOKEN_TTL_S
        from starlette.concurrency import run_in_threadpool

        def mint() -> tuple[str, int]:
            with acting_as(who.acting):
                return auth.token_store().mint_customer_token(req.customer_id, ttl_s=ttl)

        token, expires = await run_in_threadpool(mint)  # the audit entry's fsync: off the event loop
        return {"object": "customer_token", "token": token, "token_type": "Bearer", "customer_id": req.customer_id,
                "expires_at": expires, "expires_in": ttl}

    @app.post("/v1/adapters", openapi_extra=_operation("AdapterRequest", "AdapterResponse", AUTH + BODY))
    async def load_adapter(request: Request):
        """Hot-load (or replace) a LoRA adapter while serving; needs ``model:deploy``; audited."""
        who = caller(request, "model:deploy")
        req = parse(AdapterRequest, await read_json(request))
        engine = service.engine
        if not hasattr(engine, "load_adapter"):
            raise ApiError(400, f"the {getattr(engine, 'name', '?')} engine cannot load adapters; load them on the "
                                "remote server (vLLM --lora-modules)")
        from starlette.concurrency import run_in_threadpool

        try:
            config = await run_in_threadpool(check_adapter, req.path, getattr(engine.model, "base_model",
                                                                              engine.model))
        except KefuError as exc:  # no adapter_config.json, an adapter for another base model...
            raise ApiError(400, str(exc), param="path", code="invalid_adapter") from exc
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission...
            raise ApiError(400, f"path: cannot read an adapter at this path: {type(exc).__name__}: "
                                f"{getattr(exc, 'strerror', None) or exc}", param="path",
                           code="invalid_adapter") from exc
        try:
            await run_in_threadpool(engine.load_adapter, req.name, req.path)
        except Exception as exc:  # the files the client pointed at are unreadable/corrupt: its error, not ours
            raise ApiError(400, f"path: cannot load the adapter's weights from {req.path}: {type(exc).__name__}: "
                                f"{str(exc)[:300]}", param="path", code="invalid_adapter") from exc
        audit.record("serve.adapter.load", req.name, actor=f"key:{who.id}:{who.name}",
                     details={"path": req.path}, digest=audit.sha256_file(config.folder / ADAPTER_CONFIG))
        return {"object": "adapter", "name": req.name, "models": service.models()}

    # ---- pages (docs/pages.md): / a landing page, /widget the customer chat a shop embeds (static/widget.js puts it
    # in an iframe), /operator the staff console. Scripts and styles only from this origin (no inline code, no CDN,
    # no web fonts); only /widget may be framed, by the origins in $KEFU_WIDGET_FRAME_ANCESTORS.
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return _page("index.html", "'none'")

    @app.get("/widget", response_class=HTMLResponse, include_in_schema=False)
    async def widget():
        return _page("widget.html", widget_frame_ancestors(config))

    @app.get("/operator", response_class=HTMLResponse, include_in_schema=False)
    async def operator():
        return _page("operator.html", "'none'")

    @app.get("/static/{name}", openapi_extra=_operation(None, None, (404,)))
    async def static(name: str):
        media = STATIC_FILES.get(name)
        if media is None:
            raise ApiError(404, f"no static file {name!r}", code="not_found")
        return Response(_static(name), media_type=f"{media}; charset=utf-8", headers=STATIC_HEADERS)

    return app


STATIC_FILES = {"sse.js": "text/javascript", "app.js": "text/javascript", "widget.js": "text/javascript", "operator.js": "text/javascript",
                "widget.css": "text/css", "operator.css": "text/css"}
# widget.js runs on the shop's pages: CORP lets a shop that sets Cross-Origin-Embedder-Policy load it too
STATIC_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
                  "Cross-Origin-Resource-Policy": "cross-origin"}
_FRAME_SOURCE = re.compile(r"^(?:\*|https?://(?:\*\.)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?)$")


def widget_frame_ancestors(config: Any) -> str:
    """Who may frame /widget: this origin plus the shop origins listed (space or comma separated) in
    ``serve.widget_frame_ancestors`` or ``$KEFU_WIDGET_FRAME_ANCESTORS`` (``https://shop.example``,
    ``https://*.shop.example``, ``*``); anything else in the list is ignored (it cannot inject a directive)."""
    raw = getattr(config, "widget_frame_ancestors", None) or os.environ.get("KEFU_WIDGET_FRAME_ANCESTORS", "")
    if isinstance(raw, (list, tuple)):
        raw = " ".join(str(x) for x in raw)
    shops = [s for s in str(raw).replace(",", " ").split() if _FRAME_SOURCE.match(s)]
    return " ".join(["'self'"] + list(dict.fromkeys(shops)))


def page_headers(frame_ancestors: str) -> dict[str, str]:
    """A page's security headers: CSP (scripts, styles, fetches only from this origin; framing by
    ``frame_ancestors``), no MIME sniffing, no referrer."""
    csp = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
           f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}")
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Permissions-Policy": "camera=(), microphone=(), geolocation=()", "Cache-Control": "no-cache"}
    if frame_ancestors == "'none'":
        headers["X-Frame-Options"] = "DENY"
    return headers


def _page(name: str, frame_ancestors: str) -> HTMLResponse:
    return HTMLResponse(_static(name), headers=page_headers(frame_ancestors))


def _static(name: str) -> str:
    return resources.files("kefu.serve").joinpath("static", name).read_text(encoding="utf-8")
