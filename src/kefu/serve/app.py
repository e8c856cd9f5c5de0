"""The HTTP app: OpenAI-compatible chat completions (plain and SSE streaming), models, feedback, health, metrics,
and the web chat page. Errors use OpenAI's JSON shape so the official client raises its usual exceptions.
"""

from __future__ import annotations

import gc
import json
import time
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import quote
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kefu.artifacts.run import ADAPTER_CONFIG
from kefu.safety import audit
from kefu.serve.gateway import Authenticator, Caller, TokenBucketLimiter
from kefu.serve.pipeline import ChatService
from kefu.train.models import check_adapter
from kefu.types import KefuError

ALLOWED_ROLES = ("system", "developer", "user", "assistant")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The OpenAI request fields we use; others (n, top_p, ...) are accepted and ignored. kefu extensions:
    ``session_id`` and ``customer_id`` (or the standard ``user``), via ``extra_body`` in the openai client."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    user: str | None = Field(None, max_length=128)
    session_id: str | None = Field(None, max_length=128)
    customer_id: str | None = Field(None, max_length=128)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rating", "correction", "handoff"]
    session_id: str = Field(min_length=1, max_length=128)
    customer_id: str | None = Field(None, max_length=128)
    message_id: str | None = Field(None, max_length=128)
    model: str | None = Field(None, max_length=128)
    rating: int | None = None
    correction: str | None = Field(None, max_length=8000)
    outcome: str | None = Field(None, max_length=32)
    comment: str | None = Field(None, max_length=2000)
    source: Literal["api", "web"] = "api"


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1, max_length=1000)


def _validation_message(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}", loc


def _content_text(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise ApiError(400, f"messages[{index}].content: only text parts are supported, got "
                                f"{part.get('type')!r}", param=f"messages.{index}.content")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def create_app(service: ChatService, *, auth: Authenticator | None = None,
               limiter: TokenBucketLimiter | None = None) -> FastAPI:
    """The FastAPI app around ``service``. ``auth=None`` means keys from ``$KEFU_API_KEY``/the key store."""
    config = service.config
    auth = auth or Authenticator(enabled=config.auth)
    limiter = limiter or TokenBucketLimiter(config.rate_limit_per_s, config.rate_limit_burst)
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
    async def _api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code,
                              headers=exc.headers)

    @app.exception_handler(KefuError)
    async def _kefu_error(_request: Request, exc: KefuError):
        return error_response(400, str(exc))

    def caller(request: Request, permission: str) -> Caller:
        who = auth.authenticate(request.headers.get("authorization"))
        if who is None:
            metrics.requests.labels(request.url.path, "none", "401").inc()
            raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>' with a key from "
                                "$KEFU_API_KEY or `kefu keys create`.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not who.can(permission):
            raise ApiError(403, f"this key ({who.name}) lacks the permission {permission}", type="permission_error",
                           code="permission_denied")
        wait = limiter.acquire(who.id)
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
            return json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "engine": getattr(service.engine, "name", None), "models": service.models(),
                "kg_version": service.kg_version(), "sessions": len(service.sessions), "cache_entries": len(service.cache)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models(request: Request):
        caller(request, "chat")
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "kefu"}
                                           for m in service.models()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        who = caller(request, "chat")
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(raw)
        except ValidationError as exc:
            message, loc = _validation_message(exc)
            raise ApiError(400, message, param=loc) from exc
        messages = []
        for i, m in enumerate(req.messages):
            if m.role not in ALLOWED_ROLES:
                raise ApiError(400, f"messages[{i}].role: unknown role {m.role!r}; expected one of "
                                    f"{', '.join(ALLOWED_ROLES)}", param=f"messages.{i}.role", code="invalid_role")
            messages.append({"role": "system" if m.role == "developer" else m.role,
                             "content": _content_text(m.content, i)})
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise ApiError(400, "messages: at least one non-empty user message is needed", param="messages")
        if req.model not in service.models():
            raise ApiError(404, f"The model {req.model!r} does not exist; available: {', '.join(service.models())}",
                           param="model", code="model_not_found")
        try:
            customer = who.customer(req.customer_id or req.user)
        except PermissionError as exc:
            raise ApiError(403, str(exc), type="permission_error", param="customer_id") from exc
        events = service.respond(messages, caller_id=who.id, session_id=req.session_id,
                                 customer_id=customer, model=req.model,
                                 max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature)
        created = int(time.time())
        if req.stream:
            return StreamingResponse(_sse(events, req.model, created), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        reply = None
        async for event in events:
            if event["type"] == "done":
                reply = event["reply"]
        assert reply is not None
        return JSONResponse({
            "id": reply.message_id, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "kefu": reply.meta(),
        }, headers={"X-Kefu-Path": reply.path, "X-Kefu-Session": quote(reply.session_id, safe="")})

    async def _sse(events, model: str, created: int):
        message_id = None

        def chunk(delta: dict[str, Any], finish: str | None = None, extra: dict[str, Any] | None = None) -> str:
            body = {"id": message_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if extra:
                body.update(extra)
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async for event in events:
            if event["type"] == "meta":
                message_id = event["reply"].message_id
                yield chunk({"role": "assistant", "content": ""}, extra={"kefu": event["reply"].meta()})
            elif event["type"] == "delta":
                yield chunk({"content": event["text"]})
            elif event["type"] == "done":
                yield chunk({}, "stop", extra={"kefu": event["reply"].meta()})
        yield "data: [DONE]\n\n"

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        who = caller(request, "feedback:write")
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            req = FeedbackRequest.model_validate(raw)
        except ValidationError as exc:
            message, loc = _validation_message(exc)
            raise ApiError(400, message, param=loc) from exc
        data = req.model_dump()
        source = data.pop("source")
        from starlette.concurrency import run_in_threadpool

        # the durable commit (fsync) runs off the event loop so streaming answers are not held up
        feedback_id = await run_in_threadpool(service.add_feedback, data, caller_id=who.id, source=source)
        metrics.requests.labels("/v1/feedback", req.kind, "ok").inc()
        return {"id": feedback_id, "object": "feedback", "status": "stored"}

    @app.post("/v1/adapters")
    async def load_adapter(request: Request):
        """Hot-load (or replace) a LoRA adapter while serving; needs ``model:deploy``; audited."""
        who = caller(request, "model:deploy")
        raw = await read_json(request)
        try:
            req = AdapterRequest.model_validate(raw)
        except ValidationError as exc:
            message, loc = _validation_message(exc)
            raise ApiError(400, message, param=loc) from exc
        engine = service.engine
        if not hasattr(engine, "load_adapter"):
            raise ApiError(400, f"the {getattr(engine, 'name', '?')} engine cannot load adapters; load them on the "
                                "remote server (vLLM --lora-modules)")
        from starlette.concurrency import run_in_threadpool

        config = await run_in_threadpool(check_adapter, req.path, getattr(engine.model, "base_model", engine.model))
        await run_in_threadpool(engine.load_adapter, req.name, req.path)
        audit.record("serve.adapter.load", req.name, actor=f"key:{who.id}:{who.name}",
                     details={"path": req.path}, digest=audit.sha256_file(config.folder / ADAPTER_CONFIG))
        return {"object": "adapter", "name": req.name, "models": service.models()}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in ("app.js", "style.css"):
            raise ApiError(404, f"no static file {name!r}", code="not_found")
        media = "application/javascript" if name.endswith(".js") else "text/css"
        return Response(_static(name), media_type=f"{media}; charset=utf-8")

    return app


def _static(name: str) -> str:
    return resources.files("kefu.serve").joinpath("static", name).read_text(encoding="utf-8")
