"""The HTTP API's typed contract: the OpenAI chat-completions request and response (plain and streamed), models,
errors, and kefu's feedback and adapter bodies -- one place, in the shape of vLLM's
``entrypoints/openai/protocol.py``. The routes validate request bodies with these models and the published OpenAPI
document is generated from them (``openapi_components``), so what the schema accepts is what the server accepts.

Decisions (docs in the README's API section):

- Unknown request fields are rejected (``extra="forbid"``): 400 "Unrecognized request argument supplied: X", as
  OpenAI answers; the official clients send only the fields a caller sets, and a parameter silently ignored (vLLM's
  ``best_of``, ``top_k``...) is worse than a clear error.
- OpenAI parameters kefu does not implement are declared with only their "off" values (``tools: []``,
  ``response_format: {"type": "text"}``, ``seed: null``...); any other value is 400 "X is not supported by kefu
  serve; ..." naming the parameter.
- ``n`` is 1..4; ``stop`` is a string or up to 4 strings.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator,
                      model_validator)
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from kefu.loop.feedback import HANDOFF_OUTCOMES

ALLOWED_ROLES = ("system", "developer", "user", "assistant")
MAX_N = 4
MAX_STOP = 4
# A visible character: Python's str.strip() (which decides "an empty message") also strips \x1c-\x1f, which the
# regex \s does not count as white space.
NOT_BLANK = "[^\\s\\x1c-\\x1f]"


def _same(value: Any, allowed: Any) -> bool:
    """JSON equality: true/false are not the numbers 1/0, 0 and 0.0 are equal."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    if isinstance(allowed, (int, float)):
        return isinstance(value, (int, float)) and value == allowed
    return type(value) is type(allowed) and value == allowed


def unsupported(name: str, allowed: tuple[Any, ...], hint: str) -> Any:
    """A parameter kefu does not implement: only its "off" ``allowed`` values validate (and are all the schema
    declares); anything else fails with the error type ``unsupported_parameter`` and a message naming it."""

    def check(value: Any) -> Any:
        if not any(_same(value, a) for a in allowed):
            raise PydanticCustomError("unsupported_parameter", "{name} is not supported by kefu serve; {hint}",
                                      {"name": name, "hint": hint})
        return value

    return Annotated[Any, BeforeValidator(check), WithJsonSchema(
        {"enum": list(allowed),
         "description": f"not supported by kefu serve ({hint}); only {json.dumps(list(allowed))}"})]


# --------------------------------------------------------------------------------------------------- requests
def _check_role(value: Any) -> Any:
    if value not in ALLOWED_ROLES:
        raise PydanticCustomError("invalid_role", "unknown role {role}; expected one of {roles}",
                                  {"role": repr(value), "roles": ", ".join(ALLOWED_ROLES)})
    return value


Role = Annotated[Literal["system", "developer", "user", "assistant"], BeforeValidator(_check_role)]


class TextPart(BaseModel):
    """One part of a message's content; only text parts are supported."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A conversation message. The fields an assistant message echoed back by a client carries (``refusal``,
    ``annotations``, empty ``tool_calls``...) are accepted; tool and function calls are not supported."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64)
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    tool_calls: unsupported("tool_calls", (None, []), "tool calls are not supported") = None
    function_call: unsupported("function_call", (None,), "function calls are not supported") = None
    audio: unsupported("audio", (None,), "audio is not supported") = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise PydanticCustomError("unsupported_content", "only text parts are supported, got {kind}",
                                              {"kind": repr(kind)})
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = Field(None, description="send a last chunk with the request's token usage "
                                                         "(empty choices)")


Stop = str | Annotated[list[str], Field(max_length=MAX_STOP)] | None

# At least one user message with visible text (content as a string or as text parts).
_HAS_USER_TEXT = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"const": "user"},
    "content": {"anyOf": [{"type": "string", "pattern": NOT_BLANK},
                          {"type": "array", "contains": {"type": "object", "required": ["text"],
                                                         "properties": {"text": {"type": "string",
                                                                                 "pattern": NOT_BLANK}}}}]}}}


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. kefu extensions (``extra_body`` in the openai client): ``session_id`` and
    ``customer_id`` (else the standard ``user``).

    ``session_id``: leave it out to start a conversation -- the server makes a session and returns its id (the
    ``kefu.session_id`` of the answer and the ``X-Kefu-Session`` header); send it back to continue. A session
    belongs to the key and the customer it was made for; any other id is 404 ``session_not_found``.
    ``customer_id``/``user`` unlock the customer's orders only when the caller may vouch for them (a key with
    ``customer:assert``); a customer token or a customer-bound key acts for its own customer."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="one of the served models (GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={"contains": _HAS_USER_TEXT})
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096, description="deprecated by OpenAI: max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2, description="0 (default): greedy")
    n: int | None = Field(1, ge=1, le=MAX_N, description="choices to return (greedy answers are the same text)")
    stop: Stop = Field(None, description=f"up to {MAX_STOP} strings: the answer ends before the first one")
    user: str | None = Field(None, max_length=128)
    session_id: str | None = Field(None, max_length=128, description="a session id this server returned (kefu."
                                      "session_id / X-Kefu-Session) to continue it; leave out to start a new one")
    customer_id: str | None = Field(None, max_length=128, description="the customer, for a key with "
                                       "customer:assert; ignored for customer data otherwise (use a customer token)")
    # OpenAI parameters kefu does not implement: only their "off" values are accepted.
    top_p: unsupported("top_p", (None, 1), "the engines sample from the whole distribution; use temperature") = None
    tools: unsupported("tools", (None, []), "the shop's tools are called by the server, not by the client") = None
    tool_choice: unsupported("tool_choice", (None, "none"), "client-side tools are not supported") = None
    parallel_tool_calls: unsupported("parallel_tool_calls", (None, True, False),
                                     "client-side tools are not supported") = None
    functions: unsupported("functions", (None, []), "client-side functions are not supported") = None
    function_call: unsupported("function_call", (None, "none"), "client-side functions are not supported") = None
    response_format: unsupported("response_format", (None, {"type": "text"}),
                                 "replies are customer-facing text; only {\"type\": \"text\"}") = None
    logprobs: unsupported("logprobs", (None, False), "log probabilities are not returned") = None
    top_logprobs: unsupported("top_logprobs", (None, 0), "log probabilities are not returned") = None
    seed: unsupported("seed", (None,), "sampling is not seeded per request; use temperature 0 for "
                                       "reproducible answers") = None
    presence_penalty: unsupported("presence_penalty", (None, 0), "repetition is controlled by the server's "
                                                                 "configuration") = None
    frequency_penalty: unsupported("frequency_penalty", (None, 0), "repetition is controlled by the server's "
                                                                   "configuration") = None
    logit_bias: unsupported("logit_bias", (None, {}), "logit biases are not supported") = None
    modalities: unsupported("modalities", (None, ["text"]), "only text") = None
    audio: unsupported("audio", (None,), "only text") = None
    prediction: unsupported("prediction", (None,), "predicted outputs are not supported") = None
    store: unsupported("store", (None, False), "completions are not stored for later retrieval") = None
    metadata: unsupported("metadata", (None, {}), "completions are not stored for later retrieval") = None
    service_tier: unsupported("service_tier", (None, "auto", "default"), "there is one service tier") = None
    reasoning_effort: unsupported("reasoning_effort", (None,), "the served models do not reason") = None

    def texts(self) -> list[dict[str, str]]:
        """The messages as the pipeline takes them: role (``developer`` -> ``system``) and plain text."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @model_validator(mode="after")
    def _has_user_text(self) -> ChatCompletionRequest:
        if not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise PydanticCustomError("no_user_message", "at least one non-empty user message is needed",
                                      {"field": "messages"})
        return self


_FEEDBACK_RULES = [{"anyOf": [
    {"required": ["rating"], "properties": {"kind": {"const": "rating"}, "rating": {"enum": [-1, 1, 2, 3, 4, 5]}}},
    {"required": ["correction"], "properties": {"kind": {"const": "correction"},
                                                "correction": {"type": "string", "pattern": NOT_BLANK}}},
    {"required": ["outcome"], "properties": {"kind": {"const": "handoff"},
                                             "outcome": {"enum": list(HANDOFF_OUTCOMES)}}}]}]


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a rating (-1/1 thumbs or 1..5 stars), a correction, or a handoff's outcome."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _FEEDBACK_RULES})
    kind: Literal["rating", "correction", "handoff"]
    session_id: str = Field(min_length=1, max_length=128)
    customer_id: str | None = Field(None, max_length=128)
    message_id: str | None = Field(None, max_length=128)
    model: str | None = Field(None, max_length=128)
    rating: int | None = Field(None, ge=-1, le=5)
    correction: str | None = Field(None, max_length=8000)
    outcome: Literal[HANDOFF_OUTCOMES] | None = None  # type: ignore[valid-type]
    comment: str | None = Field(None, max_length=2000)
    source: Literal["api", "web"] = "api"

    @model_validator(mode="after")
    def _per_kind(self) -> FeedbackRequest:
        if self.kind == "rating" and (self.rating is None or self.rating == 0):
            raise PydanticCustomError("feedback_rule", "a rating needs -1, 1 (thumbs) or 1..5 (stars)",
                                      {"field": "rating"})
        if self.kind == "correction" and not (self.correction or "").strip():
            raise PydanticCustomError("feedback_rule", "a correction needs the corrected answer text",
                                      {"field": "correction"})
        if self.kind == "handoff" and self.outcome is None:
            raise PydanticCustomError("feedback_rule", "a handoff outcome is one of {outcomes}",
                                      {"field": "outcome", "outcomes": ", ".join(HANDOFF_OUTCOMES)})
        return self


class AdapterRequest(BaseModel):
    """``POST /v1/adapters``: hot-load (or replace) the LoRA adapter in the server-side folder ``path``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1, max_length=4096, description="a folder on the server holding "
                                                                 "adapter_config.json and the adapter's weights")


class CustomerTokenRequest(BaseModel):
    """``POST /v1/customer_tokens`` (permission ``customer:assert``: the shop's server): a signed token saying who
    the customer is, for the customer's widget to send as ``Authorization: Bearer <token>``."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128, pattern=NOT_BLANK,
                             description="the customer the shop's server has logged in")
    ttl_s: int | None = Field(None, ge=60, le=86400, description="lifetime in seconds (default 3600)")


# -------------------------------------------------------------------------------------------------- responses
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    """A whole answer. ``kefu``: how it was answered (path, intent, session, handoff summary, verification)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    kefu: dict[str, Any] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (``data: <chunk>``; the stream ends with ``data: [DONE]``). With
    ``stream_options.include_usage`` every chunk has ``usage: null`` and a last chunk with empty ``choices`` carries
    the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    kefu: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kefu"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape (the official clients raise their usual exceptions)."""

    error: ErrorDetail


class FeedbackResponse(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    status: Literal["stored"] = "stored"


class AdapterResponse(BaseModel):
    object: Literal["adapter"] = "adapter"
    name: str
    models: list[str]


class CustomerTokenResponse(BaseModel):
    object: Literal["customer_token"] = "customer_token"
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    customer_id: str
    expires_at: int = Field(description="unix seconds")
    expires_in: int = Field(description="seconds")


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok"]
    engine: str | None = None
    models: list[str]


REQUESTS = (ChatCompletionRequest, FeedbackRequest, AdapterRequest, CustomerTokenRequest)
RESPONSES = (ChatCompletionResponse, ChatCompletionChunk, ModelList, ErrorResponse, FeedbackResponse,
             AdapterResponse, CustomerTokenResponse, HealthResponse)


def openapi_components() -> dict[str, dict[str, Any]]:
    """JSON schemas of every request (validation mode) and response (serialization mode) model, keyed by name, with
    references as ``#/components/schemas/<Name>``."""
    _, schema = models_json_schema([(m, "validation") for m in REQUESTS] + [(m, "serialization") for m in RESPONSES],
                                   ref_template="#/components/schemas/{model}")
    return schema.get("$defs", {})
