"""One customer turn, end to end, in named steps: route -> fetch facts -> answer -> verify -> synthesise.
Independent of HTTP so the bench and tests can drive it directly.

``route`` records the turn in its session and asks the router once (``Router.route``); the turn carries that
``Route`` through, and it settles on the light path or the full model after ``fetch_facts`` (KG, order tools) without
asking again. Before the facts are fetched a turn may end at once: a handoff, the prompt-injection guard's refusal or
a cached answer (``shortcut``). The answer is the light path's text (``light_answer``) or the model's streamed
``draft``; ``verify`` grounds and filters it sentence by sentence (kefu.serve.synth) before anything is sent, and
``synthesise`` closes the reply (fallback, cache, session, metrics, log).

The pipeline never raises for an engine failure: the customer gets the light-path answer when there is one, else a
handoff to a human, and the failure is counted and logged (with masked text only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from kefu.kg.prompt import conversation, model_messages, system_prompt, turn_exemplars
from kefu.kg.replies import ReplyIndex, by_agreement
from kefu.kg.retrieval import link, retrieve
from kefu.kg.slots import fill_slots, slot_values
from kefu.kg.tools import TOOL_SCHEMAS, ToolBox
from kefu.safety.injection import guard
from kefu.serve.cache import ResponseCache, SingleFlight
from kefu.serve.config import ServeConfig
from kefu.serve.engine import EngineError, finish_reason, token_budget
from kefu.serve.gateway import mask_text
from kefu.serve.metrics import Metrics
from kefu.serve.router import Route, RouteDecision, Router
from kefu.serve.sessions import Session, SessionStore
from kefu.serve.synth import Grounding, SentenceStream, comply, grounding_from
from kefu.serve.text import KeyEntities, key_entities, normalise
from kefu.serve.verify import Evidence, Verdict, fact_texts, verify_reply
from kefu.types import KefuError

log = logging.getLogger("kefu.serve.requests")

HANDOFF_TEXT = "好的，已为您转接人工客服，请稍候，客服同事会根据您之前的描述继续为您处理。"
BUSY_HANDOFF_TEXT = "抱歉，系统暂时繁忙，已为您转接人工客服，请稍候。"
# an order question from a request that names no verified customer (no customer token, no bound key)
LOGIN_TEXT = "查询订单需要先登录您的账号，请登录后再问我；也可以转人工客服核实身份后为您查询。"
FOLLOW_UP = re.compile(r"^(?:那|这|它|还|有没有|换)|这款|这件|这个|那款|那件|同款|它")
PERSONAL_FACTS = ("order", "logistics", "order_not_found")  # per-customer answers: never cached
MIN_RETRY_S = 3.0  # a constrained retry needs at least this much of the deadline left
CONSTRAINT_NOTE = ("【要求】只陈述上面事实里的价格、数字、日期和单号，或写成槽位如[到手价]、[运单号]；"
                   "不确定就说明并建议转人工；不要重复。")


class Rejected(Exception):
    """A draft sentence failed verification (``verdict`` says why); the draft stops there."""

    def __init__(self, verdict: Verdict):
        super().__init__("; ".join(verdict.problems))
        self.verdict = verdict


@dataclass
class Reply:
    """What a turn answered and how (the API's reply metadata); ``text`` is set when the turn is done."""

    text: str
    path: str  # light | cache | full | handoff
    reason: str
    intent: str
    session_id: str
    message_id: str
    model: str
    cached: bool = False
    fallback: bool = False
    handoff: dict[str, Any] | None = None
    fixes: list[str] = field(default_factory=list)
    violations: int = 0
    verification: list[str] = field(default_factory=list)  # what failed verification, per attempt (empty: passed)
    replaced: str | None = None  # why the model's reply was replaced (a verification reason), None when it was not
    finish_reason: str = "stop"  # "length" when the model's answer was cut by its token budget
    facts: list[str] = field(default_factory=list)  # the fact lines this turn's answer rests on (for operators)
    prompt_tokens: int | None = None  # counted by the engine for a model answer (None: count them with count_tokens)
    completion_tokens: int | None = None

    def meta(self, staff: bool = False) -> dict[str, Any]:
        """The reply's metadata for the API; the facts it used only for shop staff (``staff``): a customer sees
        the answer, an operator also sees what it rests on."""
        data = asdict(self)
        data.pop("text")
        if not staff:
            data.pop("facts")
        return data


def _order_tool_names() -> tuple[str | None, str | None]:
    """(order status tool, logistics tool) names from the KG stage's tool schemas."""
    names = []
    for schema in TOOL_SCHEMAS:
        fn = schema.get("function", schema) if isinstance(schema, dict) else {}
        names.append(str(fn.get("name", "")))
    status = next((n for n in names if "order" in n and "status" in n), None) or \
        next((n for n in names if "order" in n), None)
    logistics = next((n for n in names if "logistic" in n or "track" in n or "shipment" in n), None)
    return status, logistics


def format_order(result: dict[str, Any]) -> str:
    """A customer-facing sentence from an order tool result (fields read defensively)."""
    if not isinstance(result, dict):
        return "抱歉，暂时查不到该订单，请核对订单号。"
    if result.get("error"):
        return f"抱歉，{result['error']}"
    order_no = result.get("order_no", "")
    parts = [f"您的订单{('（尾号' + str(order_no)[-4:] + '）') if order_no else ''}当前状态：{result.get('status', '未知')}"]
    shipment = result.get("shipment") or {}
    carrier = result.get("carrier") or shipment.get("carrier")
    tracking = result.get("tracking_no") or shipment.get("tracking_no")
    if carrier:
        parts.append(f"承运快递：{carrier}{'，运单号' + str(tracking) if tracking else ''}")
    events = result.get("events") or shipment.get("events") or []
    if not events and isinstance(result.get("latest_event"), dict):
        events = [result["latest_event"]]
    if events:
        last = events[-1]
        parts.append(f"最新物流：{last.get('time', '')[:16].replace('T', ' ')} {last.get('location', '')} "
                     f"{last.get('status', '')}".strip())
    return "，".join(parts) + "。"


@dataclass
class Turn:
    """One request on its way through the steps: what was asked, by whom, the router's ``route`` (asked once, at the
    start) and the ``reply`` being built."""

    messages: list[dict[str, str]]
    text: str  # the customer's newest message as sent (the KG and the order tools need the real order number)
    masked: str  # the same with PII masked: what sessions and logs keep
    entities: KeyEntities
    session: Session
    route: Route
    reply: Reply
    caller_id: str
    customer_id: str | None
    model: str
    max_tokens: int
    temperature: float
    started: float
    context: str = ""  # the product under discussion when this turn names none (cache context, follow-ups)
    first_token_at: float | None = None  # when the first verified piece of a model answer went out
    stop: tuple[str, ...] = ()  # the request's stop strings (the engine cuts the draft at the first one)
    sample: bool = False  # another sample of a turn already recorded (the API's n > 1 at temperature > 0)
    held: bool = False  # the client takes the answer whole (no stream): nothing goes out before it is complete

    @property
    def shareable(self) -> bool:
        """Whether this turn's model answer may be cached or given to the same question in flight: not a sample (it
        must differ), not one cut at the request's own stop strings."""
        return not self.sample and not self.stop

    def elapsed(self) -> float:
        """Seconds since the request arrived."""
        return time.perf_counter() - self.started


@dataclass
class Found:
    """What the KG and the order tools said for a turn, and the grounding its answer is checked against."""

    facts: Any  # the retriever's ``Facts`` (``answer``, ``prompt_block``, ``facts``), or None
    tool_result: dict[str, Any] | None
    tool_text: str | None  # the order tool's result as a customer-facing sentence
    grounding: Grounding
    personal: bool  # a per-customer answer (orders, logistics): never cached, never shared
    evidence: Evidence = field(default_factory=Evidence)  # what a reply to this turn may state
    slots: dict[str, str] = field(default_factory=dict)  # this turn's slot values ([到手价] -> ¥539.1)

    @property
    def kg_answer(self) -> str | None:
        return getattr(self.facts, "answer", None) if self.facts is not None else None

    past_reply: str | None = None  # the shop's own past reply for the turn, filled and verified (``past_reply``)
    past_reason: str | None = None  # which: a near-identical question's, or the one the shop's agents agree on

    @property
    def light_text(self) -> str | None:
        """The light path's answer: the order tool's (with what else the KG settled for the turn: "我要退货" gets the
        order's return windows), else the KG's direct one, else the shop's past reply."""
        if self.tool_text:
            order_found = isinstance(self.tool_result, dict) and not self.tool_result.get("error")
            parts = (getattr(self.facts, "parts", None) or {}) if order_found and self.kg_answer else {}
            return self.tool_text + "".join(v for k, v in parts.items() if k != "order")
        return self.kg_answer or self.past_reply

    def prompt_block(self) -> str | None:
        """The facts the full model is given in its system prompt."""
        return "\n".join(x for x in (getattr(self.facts, "prompt_block", None), self.tool_text) if x) or None


class ChatService:
    """Holds the serving components; ``respond`` runs one turn and yields events (meta, delta..., done)."""

    def __init__(self, engine, *, config: ServeConfig | None = None, router: Router | None = None,
                 cache: ResponseCache | None = None, sessions: SessionStore | None = None, feedback=None, kg=None,
                 order_backend=None, metrics: Metrics | None = None, shop: str = "本店",
                 promotions: list[dict[str, Any]] | None = None, base_model: str = "base",
                 retriever: Callable[[str, str | None], Any] | None = None,
                 order_lookup: Callable[[str, str | None, str], dict[str, Any] | None] | None = None,
                 replies: ReplyIndex | None = None, flights: SingleFlight | None = None, exemplars: int = 0):
        """``retriever(text, customer_id) -> Facts`` and ``order_lookup(order_no, customer_id, text) -> dict`` default
        to the KG stage's ``retrieve`` and ``ToolBox``; tests and other deployments may inject their own.
        ``exemplars``: past replies shown in the model's prompt, as many as the served run was trained with
        (``TrainRun.exemplars``)."""
        self.config = config or ServeConfig()
        self.engine = engine
        if hasattr(engine, "retire_base") and not self.config.allow_base_model:
            engine.retire_base()  # the base model answers no one (the local engine merges a lone adapter)
        self.metrics = metrics or Metrics()
        self.router = router or Router(handoff_after_failures=self.config.handoff_after_failures)
        # stores passed in are used even when empty (``len`` 0); flights: answers being generated (single flight)
        self.flights = flights if flights is not None else SingleFlight()
        self.model_turns = 0  # turns on the full path right now (admission control)
        self.max_model_turns = self.config.max_model_requests or 2 * self.config.max_batch_size
        self.cache = cache if cache is not None else ResponseCache(
            self.config.cache_ttl_s, self.config.cache_max_entries, on_hit=self.metrics.cache_hits.inc,
            on_miss=self.metrics.cache_misses.inc)
        self.sessions = sessions if sessions is not None else SessionStore(self.config.max_sessions,
                                                                           self.config.max_turns_per_session)
        self.feedback = feedback
        self.kg = kg
        self.order_backend = order_backend
        self.promotions = promotions
        self.shop = shop
        self.system_prompt = system_prompt(shop)
        self.base_model = base_model
        self.request_log: deque[dict[str, Any]] = deque(maxlen=2000)
        self._order_tool, self._logistics_tool = _order_tool_names()
        self._kg_version: tuple[str | None, float] = (None, float("-inf"))
        self._promo_cache: tuple[str | None, list[dict[str, Any]] | None] = ("<none>", None)
        self.retriever = retriever or self._retrieve
        self.replies = replies  # the shop's past replies (a light tier for near-identical questions, exemplars)
        self.exemplars = exemplars
        self.order_lookup = order_lookup or self._order_lookup

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the API's usage: the served model's tokenizer, else one per character (what a
        CJK tokenizer roughly gives) when no model is served."""
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None:
            return len(text)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def models(self) -> list[str]:
        """The models a request may name, the default first. The untuned base model is never among them (unless
        ``serve.allow_base_model``): it must not answer customers. With no trained model to serve (no engine, or
        a registry with nothing promoted yet) the base's name is listed and turns are answered without a model."""
        names = self.tuned_models()
        return names if names else [self.base_model]

    def tuned_models(self) -> list[str]:
        """The engine's models that may answer customers: its adapters (and the base with ``allow_base_model``)."""
        if self.engine is None:
            return []
        names = list(self.engine.models())
        base = getattr(self.engine, "base_name", None)
        if not self.config.allow_base_model and base in names:
            names.remove(base)
        return names

    def kg_version(self, max_age_s: float = 1.0) -> str | None:
        """The KG version, re-read at most once a second (a DB query; the cache is invalidated when it changes)."""
        if self.kg is None:
            return None
        now = time.monotonic()
        if now - self._kg_version[1] > max_age_s:
            self._kg_version = (str(getattr(self.kg, "version", None)), now)
        return self._kg_version[0]

    # -- helpers ------------------------------------------------------------------------------------------------
    def _promotions(self) -> list[dict[str, Any]] | None:
        """Promotions the compliance filter checks claims against: given ones, else the KG's (per version)."""
        if self.promotions is not None or self.kg is None:
            return self.promotions
        version = self.kg_version()
        if self._promo_cache[0] != version:
            try:
                promos = [p.to_dict() for p in self.kg.snapshot().promotions]
            except Exception:
                log.exception("cannot read promotions from the KG")
                promos = None
            self._promo_cache = (version, promos)
        return self._promo_cache[1]

    def session_for(self, caller_id: str, session_id: str | None, customer_id: str | None) -> Session:
        """The turn's session: the one named (this key's and customer's; made when absent, for in-process callers
        that name their own), else a new one with a server-made random id. Never derived from the messages: two
        customers who open with the same words must not share a session (issue 19). The HTTP API makes or finds the
        session itself (404 for another key's or customer's) and passes its id."""
        if session_id:
            return self.sessions.get(caller_id, session_id, customer_id)
        return self.sessions.create(caller_id, customer_id)

    def _retrieve(self, text: str, customer_id: str | None):
        if self.kg is None:
            return None
        try:
            return retrieve(self.kg, text, customer_id=customer_id)
        except Exception:  # the KG must never take the chat down
            log.exception("KG retrieval failed")
            return None

    def _link(self, text: str) -> list[dict]:
        """The catalogue's products, colours and sizes named in ``text`` (the KG's linker; none without a KG)."""
        if self.kg is None:
            return []
        try:
            return link(self.kg, text)
        except Exception:  # the KG must never take the chat down
            log.exception("KG linking failed")
            return []

    def check(self, text: str, found: Found) -> Verdict:
        """Verify ``text`` (slots already filled) against this turn's evidence."""
        return verify_reply(text, found.evidence, link=self._link if self.kg is not None else None)

    def _order_lookup(self, order_no: str, customer_id: str | None, text: str) -> dict[str, Any] | None:
        """The order tools (scoped to the authenticated customer), flattened to one dict; None when unavailable."""
        if self.kg is None or self.order_backend is None or self._order_tool is None or not customer_id:
            return None
        try:
            box = ToolBox(self.kg, self.order_backend, customer_id)
            result = box.call(self._order_tool, {"order_no": order_no})
            if not result.get("ok", True):
                return {"error": result.get("error", "订单查询失败")}
            flat = dict(result.get("order") or result)
            if self._logistics_tool and any(w in text for w in ("物流", "快递", "到哪", "运单", "发货")):
                extra = box.call(self._logistics_tool, {"order_no": order_no})
                if extra.get("ok", True):
                    flat.update({k: v for k, v in extra.items() if k in ("events", "carrier", "tracking_no")})
            return flat
        except Exception as exc:
            log.warning("order tool failed: %s", type(exc).__name__)
            return {"error": "订单查询暂时不可用，请稍后再试或转人工。"}

    def model_messages(self, messages: list[dict[str, str]], facts_block: str | None = None,
                       session_turns: list[dict[str, str]] = ()) -> list[dict[str, str]]:
        """What the full-model path sends for a turn (``kefu.kg.prompt.model_messages``, as training renders it:
        the facts, the run's number of exemplars from the shop's past replies, the conversation)."""
        shown = turn_exemplars(self.replies, conversation(messages, session_turns), self.exemplars)
        return model_messages(messages, facts_block, shop=self.shop, session_turns=session_turns, exemplars=shown)

    def _log(self, reply: Reply, caller_id: str, masked: str, started: float, error: str | None = None) -> None:
        entry = {"time": time.time(), "caller": caller_id, "session": hashlib.sha256(
            reply.session_id.encode()).hexdigest()[:12], "message_id": reply.message_id, "path": reply.path,
            "reason": reply.reason, "intent": reply.intent, "cached": reply.cached, "fallback": reply.fallback,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2), "question": masked, "error": error}
        self.request_log.append(entry)
        log.info(json.dumps(entry, ensure_ascii=False))

    # -- the turn -------------------------------------------------------------------------------------------------
    async def respond(self, messages: list[dict[str, str]], *, caller_id: str = "local", session_id: str | None = None,
                      customer_id: str | None = None, model: str | None = None, max_tokens: int | None = None,
                      temperature: float = 0.0, stop: list[str] | None = None,
                      sample: bool = False, held: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"type": "meta", "reply": Reply}``, then ``{"type": "delta", "text"}``... (``"replaces": True`` on
        a replacement that follows streamed sentences and stands instead of them), then
        ``{"type": "done", "reply": Reply}`` (final text included). ``stop``: extra stop strings for the model's
        draft. ``sample``: another sample of the turn this session has just recorded (the API's ``n``): the session
        is read, not changed, and the answer is neither taken from nor put in the cache. ``held``: the caller takes
        the answer whole (a non-streaming request): the model's draft is sent only once it is complete and verified,
        so a draft that fails late is regenerated or replaced whole, never sent in part."""
        turn = self.route(messages, caller_id=caller_id, session_id=session_id, customer_id=customer_id,
                          model=model, max_tokens=max_tokens, temperature=temperature, stop=stop, sample=sample,
                          held=held)
        early = self.shortcut(turn)
        if early is not None:
            for event in early:
                yield event
            return
        found = self.fetch_facts(turn)
        decision = turn.route.settle(light_answer=bool(found.kg_answer or found.past_reply),
                                     tool_answer=bool(found.tool_text))
        if decision.path == "light" and found.past_reason:  # set only when the past reply is the light answer
            decision = replace(decision, reason=found.past_reason)
        if decision.path == "light":
            for event in self.light_answer(turn, found, decision):
                yield event
            return
        if not self.tuned_models():  # no trained model is served: what the shop's data can say, else a person
            for event in self.without_model(turn, found):
                yield event
            return
        if self.model_turns >= self.max_model_turns:  # the model's queue is over budget: answer now, or a person
            self.metrics.shed.labels("model queue full").inc()
            for event in self.without_model(turn, found, "shed: model queue full"):
                yield event
            return
        self.model_turns += 1
        self.metrics.model_turns.set(self.model_turns)
        try:
            async for event in self.full_answer(turn, found, decision):
                yield event
        finally:
            self.model_turns -= 1
            self.metrics.model_turns.set(self.model_turns)

    def without_model(self, turn: Turn, found: Found, why: str = "no trained model") -> Iterator[dict[str, Any]]:
        """A turn the router would give the model when no model answers it (none is served, or its queue is over
        budget): the light path's answer for it when there is one, else a handoff to a human."""
        if found.light_text:
            return self.light_answer(turn, found, RouteDecision("light", f"{why}: light answer", turn.route.intent))
        text = BUSY_HANDOFF_TEXT if why.startswith("shed") else HANDOFF_TEXT
        return self._single(turn, self._handoff(turn, why, text))

    def route(self, messages: list[dict[str, str]], *, caller_id: str, session_id: str | None,
              customer_id: str | None, model: str | None, max_tokens: int | None,
              temperature: float, stop: list[str] | None = None, sample: bool = False, held: bool = False) -> Turn:
        """Step 1, route: record the question in its session (failure signals, entities, intent) and ask the router, once,
        where the turn goes."""
        started = time.perf_counter()
        model = model or self.models()[0]
        text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        masked = mask_text(text)
        session = self.session_for(caller_id, session_id, customer_id)
        sid = session.id
        if sample:  # a detached copy as the first sample left it: this one changes nothing the store keeps
            session = replace(session, turns=list(session.turns), intents=list(session.intents),
                              entities={k: list(v) for k, v in session.entities.items()})
        ents = key_entities(text)
        previous_skus = list(session.entities.get("sku", []))
        prev_q = next((t["content"] for t in reversed(session.turns) if t["role"] == "user"), None)
        if not sample:
            if self.router.is_failure_signal(text) or (prev_q is not None and normalise(prev_q) == normalise(masked)):
                session.failures += 1
            for kind, values in (("order_no", ents.order_nos), ("sku", ents.skus), ("size", ents.sizes),
                                 ("color", ents.colors)):
                if values:
                    session.remember(kind, values)
        route = self.router.route(text, failures=session.failures, known_order=session.last("order_no"))
        # the intent's length budget; the client may ask for less, never more (cost/latency amplification)
        max_tokens = token_budget(self.config, route.intent, max_tokens)
        if not sample:
            session.intents.append(route.intent)
            session.add_turn("user", masked, self.sessions.max_turns)
        reply = Reply("", "light", "", route.intent, sid, "chatcmpl-" + uuid.uuid4().hex[:24], model)
        return Turn(messages, text, masked, ents, session, route, reply, caller_id, customer_id, model, max_tokens,
                    temperature, started,
                    context="" if ents.skus or not previous_skus else previous_skus[-1],
                    stop=tuple(s for s in (stop or ()) if s), sample=sample, held=held)

    def shortcut(self, turn: Turn) -> Iterable[dict[str, Any]] | None:
        """The events of a turn that ends before its facts are fetched: a handoff the router decided, the
        prompt-injection guard's fixed refusal (the model is not called), or a cached answer; None otherwise."""
        reply = turn.reply
        if turn.route.handoff is not None:
            out = self._handoff(turn, turn.route.handoff)
            return self._single(turn, out)
        refusal = guard(turn.text)
        if refusal is not None:
            reply.path, reply.reason = "light", "injection guard"
            self.metrics.injections.inc()
            return self._single(turn, refusal)
        self.cache.set_kg_version(self.kg_version())
        if not turn.route.order_tool and not turn.sample:
            hit = self.cache.get(turn.text, model=turn.model, context=turn.context)
            if hit is not None:
                return self._shared(turn, hit.answer, f"cached {hit.path} answer")
        return None

    def fetch_facts(self, turn: Turn) -> Found:
        """Step 2, fetch facts: the order tools (when the route wants them and an order number is known) and the KG's facts; a
        follow-up ("那黑色的呢", "这款有XL吗") is looked up with the product under discussion."""
        order_no = turn.entities.order_nos[-1] if turn.entities.order_nos else turn.session.last("order_no")
        tool_result = None
        if turn.route.order_tool and order_no:  # orders only for a verified customer (docs/security.md)
            tool_result = (self.order_lookup(order_no, turn.customer_id, turn.text) if turn.customer_id
                           else {"error": LOGIN_TEXT})
        tool_text = format_order(tool_result) if tool_result is not None else None
        lookup = turn.text
        if turn.context and FOLLOW_UP.search(turn.text):
            lookup = f"{turn.context} {turn.text}"
        facts = self.retriever(lookup, turn.customer_id)
        grounding = grounding_from(facts, [tool_result] if isinstance(tool_result, dict) else [],
                                   self._promotions())
        personal = tool_text is not None or any(
            isinstance(f, dict) and f.get("type") in PERSONAL_FACTS for f in (getattr(facts, "facts", None) or []))
        customer = [m["content"] for m in turn.messages if m.get("role") == "user"]
        evidence = Evidence.gather(fact_texts(facts, tool_result), customer, system_prompt=self.system_prompt,
                                   link=self._link)
        found = Found(facts, tool_result, tool_text, grounding, personal, evidence, slot_values(facts, tool_result))
        turn.reply.facts = [str(f.get("text", "")) for f in (getattr(facts, "facts", None) or []) if isinstance(f, dict)]
        if tool_text:
            turn.reply.facts.append(tool_text)
        found.past_reply = self.past_reply(turn, found)
        return found

    def past_reply(self, turn: Turn, found: Found) -> str | None:
        """The shop's own past reply for this turn, its slots filled from this turn's facts and verified like any
        reply (sets ``found.past_reason``); None when there is none:

        - the reply to a near-identical earlier question (similarity ≥ ``serve.reply_min_similarity``);
        - else, only where the shop's data holds nothing about the turn (no fact, no order), the reply its agents
          agree on: the most agreed of the ``serve.consensus_k`` best past replies to somewhat alike questions
          (:func:`~kefu.kg.replies.by_agreement`) with agreement ≥ ``serve.consensus_min_agreement``. Where
          a product, promotion or order is concerned, its facts answer, never what agents said about another one."""
        if self.replies is None or found.tool_text or found.kg_answer:
            return None
        config = self.config
        agreed = config.consensus_k > 0 and not getattr(found.facts, "facts", None) and found.tool_result is None
        matches = self.replies.search(turn.messages, k=max(3, config.consensus_k) if agreed else 3)  # one search
        for match in matches[:3]:
            if match.similarity < config.reply_min_similarity:
                break
            text = self._fitted(match.reply, found)
            if text is not None:
                found.past_reason = "past reply to the same question"
                return text
        if not agreed:
            return None
        for candidate in by_agreement(matches[:config.consensus_k], config.consensus_min_similarity):
            if candidate.agreement < config.consensus_min_agreement:
                break
            text = self._fitted(candidate.text, found)
            if text is not None:
                found.past_reason = "the shop's agents agree"
                return text
        return None

    def _fitted(self, reply: str, found: Found) -> str | None:
        """A past reply with its slots filled from this turn's facts, if every slot fills and it verifies."""
        text, unfilled = fill_slots(reply, found.slots)
        return text if not unfilled and self.check(text, found).ok else None

    def light_answer(self, turn: Turn, found: Found, decision: RouteDecision) -> Iterator[dict[str, Any]]:
        """Steps 3-5 on the light path: the tool's or the KG's answer, filtered by the compliance rules and verified
        like any reply (a failure hands off instead), cached unless personal."""
        reply = turn.reply
        reply.path, reply.reason = "light", decision.reason
        out, violations = comply(found.light_text or "", found.grounding)
        reply.violations = len(violations)
        self.metrics.compliance_fixes.inc(len(violations))
        verdict = self.check(out, found)
        if not verdict.ok:  # a bug in a light answer must not reach the customer either
            log.warning("light answer failed verification: %s", verdict.problems)
            out = self._replace(turn, found, verdict, allow_light=False)
        yield {"type": "meta", "reply": reply}
        yield {"type": "delta", "text": out}
        self.metrics.ttft.labels("light").observe(turn.elapsed())
        if not found.personal and verdict.ok:
            self.cache.put(turn.text, out, "light", model=turn.model, context=turn.context)
        self._log(reply, turn.caller_id, turn.masked, turn.started)
        yield self._finish(turn, out)

    async def full_answer(self, turn: Turn, found: Found,
                          decision: RouteDecision) -> AsyncIterator[dict[str, Any]]:
        """Steps 3-5 on the full path: the model's draft (``draft``), its slots filled, grounded, filtered and
        verified sentence by sentence (``verify``) so only verified text is sent. A draft that fails verification
        before anything was sent is generated once more under constraints; a second failure, or a failure after
        part of the answer went out, ends the draft and ``synthesise`` sends the light path's answer or a handoff
        instead. A held turn (the client takes the answer whole) sends the draft only once it is complete, so a late
        failure is regenerated or replaced whole. The same question already on its way through the model (several customers asking a popular
        question at once) is not generated again: this turn waits for that answer."""
        flight = self.cache.shared_key(turn.text, model=turn.model, context=turn.context, personal=found.personal)
        if not turn.shareable:
            flight = None
        leading, finished = False, False
        if flight is not None:
            leading, shared = await self.flights.join(flight)
            if shared is not None:
                for event in self._shared(turn, shared, "shared the answer of the same question in flight"):
                    yield event
                return
        try:
            reply = turn.reply
            reply.path, reply.reason = "full", decision.reason
            yield {"type": "meta", "reply": reply}
            pieces: list[str] = []
            error, verdict = None, None
            stream = self._sentence_stream(found)
            for constrained in (False, True):
                stream = self._sentence_stream(found)
                try:
                    generation = self.draft(turn, found, constrained)
                    async for piece in self.verify(turn, found, stream, self._until_deadline(turn, generation),
                                                   pieces, cut=lambda: finish_reason(generation) == "length"):
                        pieces.append(piece)
                        if not turn.held:
                            yield {"type": "delta", "text": piece}
                    if not "".join(pieces).strip():
                        raise EngineError("the model produced an empty answer")
                    reply.finish_reason = finish_reason(generation) or "stop"
                    reply.prompt_tokens = getattr(generation, "prompt_tokens", None)
                    reply.completion_tokens = getattr(generation, "completion_tokens", None)
                    self._count_generation(turn, reply)
                    verdict = None
                    break
                except Rejected as exc:
                    verdict = exc.verdict
                    reply.verification.append("; ".join(verdict.problems))
                    self.metrics.verification_failures.labels(verdict.reason).inc()
                    if turn.held:
                        pieces.clear()  # nothing went out: the whole draft is dropped
                    if pieces or verdict.reason == "deadline" or self._time_left(turn) < MIN_RETRY_S:
                        break  # part of the answer went out, or no time: the rest is replaced, not regenerated
                except EngineError as exc:
                    error = str(exc)
                    break
                except Exception as exc:  # an engine bug must not become a 5xx for the customer
                    error = f"{type(exc).__name__}: {exc}"
                    break
            if turn.held:
                if error is not None:
                    pieces.clear()  # a held answer is replaced whole
                elif pieces and verdict is None:
                    yield {"type": "delta", "text": "".join(pieces)}
            for event in self.synthesise(turn, found, stream, pieces, error, verdict):
                if event["type"] == "done":
                    finished = True
                    if error is None and verdict is None and leading:
                        self.flights.finish(flight, turn.reply.text)  # those who asked the same meanwhile get it
                        leading = False
                yield event
        finally:
            if not finished:  # the client went away: the draft was closed with the generator, so the engine stopped
                self.metrics.aborted.labels("client gone").inc()
            if leading:
                self.flights.finish(flight, None)  # failed or the client left: the waiting ones generate themselves

    def _count_generation(self, turn: Turn, reply: Reply) -> None:
        """vLLM's request metrics for a finished model answer: tokens in and out, time per output token (after the
        first), why it ended."""
        self.metrics.finish_reasons.labels(reply.finish_reason).inc()
        if reply.prompt_tokens:
            self.metrics.prompt_tokens.inc(reply.prompt_tokens)
        if reply.completion_tokens:
            self.metrics.generation_tokens.inc(reply.completion_tokens)
            if reply.completion_tokens > 1 and turn.first_token_at is not None:
                self.metrics.time_per_output_token.observe(
                    (time.perf_counter() - turn.first_token_at) / (reply.completion_tokens - 1))

    def _time_left(self, turn: Turn) -> float:
        """Seconds left of this turn's answer deadline (infinite when there is none)."""
        budget = self.config.answer_deadline_s
        return budget - turn.elapsed() if budget else float("inf")

    async def _until_deadline(self, turn: Turn, generation: AsyncIterator[str]) -> AsyncIterator[str]:
        """The engine's pieces until the turn's deadline; past it the generation is cancelled (the engine drops the
        request) and ``Rejected`` with reason "deadline" ends the draft."""
        try:
            while True:
                left = self._time_left(turn)
                try:
                    if left <= 0:
                        raise asyncio.TimeoutError
                    piece = await asyncio.wait_for(generation.__anext__(), None if left == float("inf") else left)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    self.metrics.aborted.labels("deadline").inc()
                    raise Rejected(Verdict([f"deadline: no complete answer within {self.config.answer_deadline_s:g} s"]))
                yield piece
        finally:
            closer = getattr(generation, "aclose", None)
            if closer is not None:
                await closer()

    def _sentence_stream(self, found: Found) -> SentenceStream:
        return SentenceStream(found.grounding if not found.grounding.empty() or found.grounding.context_texts else None)

    def draft(self, turn: Turn, found: Found, constrained: bool = False) -> AsyncIterator[str]:
        """Step 3, answer (full path): the model's draft, streamed, from the system prompt with the facts and the
        conversation; raises ``EngineError`` when there is no engine. ``constrained`` (the retry after a failed
        verification): greedy, half the length, and told to state figures only from the facts or as slots."""
        if self.engine is None:
            raise EngineError("no generation engine configured")
        block = found.prompt_block()
        if constrained:
            block = (block + "\n" if block else "") + CONSTRAINT_NOTE
        history = self.model_messages(turn.messages, block, turn.session.turns)
        extra = {"stop": list(turn.stop)} if turn.stop else {}
        return self.engine.stream(history, model=turn.model if turn.model != self.base_model else None,
                                  max_new_tokens=max(16, turn.max_tokens // 2) if constrained else turn.max_tokens,
                                  temperature=0.0 if constrained else turn.temperature, **extra)

    async def verify(self, turn: Turn, found: Found, stream: SentenceStream, deltas: AsyncIterator[str],
                     sent: list[str], cut: Callable[[], bool] = lambda: False) -> AsyncIterator[str]:
        """Step 4, verify: the draft's complete sentences, slots filled from this turn's facts, grounded and filtered
        for compliance (``stream`` keeps the fixes and violations), then checked with everything already ``sent``
        (``check``); raises ``Rejected`` at the first sentence that fails, and stops the draft. When ``cut()`` says
        the token budget ended the draft, an unfinished last sentence after complete ones is dropped."""
        first = True

        def checked(piece: str) -> str:
            filled, _ = fill_slots(piece, found.slots)
            verdict = self.check("".join(sent) + filled, found)
            if not verdict.ok:
                raise Rejected(verdict)
            return filled

        try:
            async for delta in deltas:
                for piece in stream.feed(delta):
                    out = checked(piece)
                    if first:
                        self.metrics.ttft.labels("full").observe(turn.elapsed())
                        turn.first_token_at = time.perf_counter()
                        first = False
                    yield out
            for piece in stream.flush(drop_partial=bool(sent) and cut()):
                yield checked(piece)
        finally:
            closer = getattr(deltas, "aclose", None)
            if closer is not None:
                await closer()  # a rejected or abandoned draft stops generating

    def synthesise(self, turn: Turn, found: Found, stream: SentenceStream, pieces: list[str],
                   error: str | None, verdict: Verdict | None = None) -> Iterator[dict[str, Any]]:
        """Step 5, synthesise (full path): close the reply. After an engine failure or a draft that failed
        verification, the light answer (or a handoff) follows what was sent; otherwise the fixes are counted and the
        verified answer is cached unless personal."""
        reply = turn.reply
        if error is not None or verdict is not None:
            if error is not None:
                self.metrics.engine_errors.labels(getattr(self.engine, "name", "none")).inc()
                reply.fallback = True
                light = found.light_text
                if light:
                    reply.path, reply.reason = "light", "fallback: engine failed"
                    fallback_text, _ = comply(light, found.grounding)
                else:
                    fallback_text = self._handoff(turn, "engine unavailable", BUSY_HANDOFF_TEXT)
            else:
                fallback_text = self._replace(turn, found, verdict)
            # verified sentences already streamed: the replacement follows them, flagged so that a client that can
            # (kefu's widget) shows it instead; the session keeps what stands, the replacement
            sep = "\n" if pieces else ""
            yield {"type": "delta", "text": sep + fallback_text, "replaces": bool(pieces)}
            self._log(reply, turn.caller_id, turn.masked, turn.started, error=error)
            yield self._finish(turn, fallback_text)
            return
        reply.fixes = stream.fixes
        reply.violations = len(stream.violations)
        self.metrics.grounding_fixes.inc(len(stream.fixes))
        self.metrics.compliance_fixes.inc(len(stream.violations))
        note = self._order_note(found, "".join(pieces))
        if note:  # the answer is about the customer's order but says nothing of where it is: the record follows
            reply.fixes.append("order status added")
            pieces.append("\n" + note)
            yield {"type": "delta", "text": "\n" + note}
        final = "".join(pieces)
        if not found.personal and turn.shareable:
            self.cache.put(turn.text, final, "full", model=turn.model, context=turn.context)
        self._log(reply, turn.caller_id, turn.masked, turn.started)
        yield self._finish(turn, final)

    @staticmethod
    def _order_note(found: Found, text: str) -> str | None:
        """The order's record as a sentence (``format_order``), when a model answer about one of the customer's
        orders — the order tool's, else the one order among the turn's KG facts — states neither its status nor its
        tracking number ("物流好几天没动了" answered with what the shop will do, not where the parcel is)."""
        record = found.tool_result if isinstance(found.tool_result, dict) and not found.tool_result.get("error") \
            else None
        if record is None and found.tool_result is None:
            orders = [f for f in (getattr(found.facts, "facts", None) or [])
                      if isinstance(f, dict) and f.get("type") == "order"]
            record = orders[0].get("data") if len(orders) == 1 else None
        if not isinstance(record, dict) or not record.get("status"):
            return None
        shipment = record.get("shipment") or {}
        tracking = record.get("tracking_no") or (shipment.get("tracking_no") if isinstance(shipment, dict) else None)
        if str(record["status"]) in text or (tracking and str(tracking) in text):
            return None
        return format_order(record)

    def _replace(self, turn: Turn, found: Found, verdict: Verdict, allow_light: bool = True) -> str:
        """The text that replaces a reply that failed verification: the light path's verified answer for this turn,
        else a handoff; counted by the verdict's reason."""
        reply = turn.reply
        reply.replaced = verdict.reason
        self.metrics.replacements.labels(verdict.reason or "unknown").inc()
        if allow_light and found.light_text:
            light, _ = comply(found.light_text, found.grounding)
            if self.check(light, found).ok:
                reply.path, reply.reason = "light", f"replaced: {verdict.reason}"
                return light
        if verdict.reason == "deadline":
            return self._handoff(turn, "deadline", BUSY_HANDOFF_TEXT)
        return self._handoff(turn, f"unverified: {verdict.reason}")

    # -- how a turn ends ------------------------------------------------------------------------------------------
    def _finish(self, turn: Turn, final: str, route: str = "chat") -> dict[str, Any]:
        """The ``done`` event: the answer joins the session (masked), the request is counted."""
        reply = turn.reply
        reply.text = final
        turn.session.add_turn("assistant", mask_text(final), self.sessions.max_turns)
        self.metrics.requests.labels(route, reply.path, "ok").inc()
        self.metrics.latency.labels(route, reply.path).observe(turn.elapsed())
        return {"type": "done", "reply": reply}

    def _single(self, turn: Turn, text: str) -> Iterator[dict[str, Any]]:
        """The events of a fixed one-piece answer (handoff, refusal)."""
        yield {"type": "meta", "reply": turn.reply}
        yield {"type": "delta", "text": text}
        self._log(turn.reply, turn.caller_id, turn.masked, turn.started)
        yield self._finish(turn, text)

    def _shared(self, turn: Turn, answer: str, reason: str) -> list[dict[str, Any]]:
        """The events of an answer someone else's turn produced (cache hit, or the same question in flight)."""
        reply = turn.reply
        reply.path, reply.reason, reply.cached = "cache", reason, True
        self.metrics.ttft.labels("cache").observe(turn.elapsed())
        self._log(reply, turn.caller_id, turn.masked, turn.started)
        return [{"type": "meta", "reply": reply}, {"type": "delta", "text": answer}, self._finish(turn, answer)]

    def _handoff(self, turn: Turn, reason: str, text_out: str = HANDOFF_TEXT) -> str:
        """Hand the session to a human: the reply carries the session's summary; returns the customer's text."""
        reply = turn.reply
        reply.path, reply.reason = "handoff", reason
        turn.session.handed_off = True
        reply.handoff = turn.session.summary()
        self.metrics.handoffs.labels(reason.split(":")[0]).inc()
        return text_out

    async def answer(self, messages: list[dict[str, str]], **kwargs) -> Reply:
        """The whole reply at once (non-streaming callers, the bench): ``respond(held=True)``."""
        reply = None
        kwargs.setdefault("held", True)
        async for event in self.respond(messages, **kwargs):
            if event["type"] == "done":
                reply = event["reply"]
        assert reply is not None
        return reply

    def add_feedback(self, record: dict[str, Any], *, caller_id: str, source: str = "api") -> int:
        """Store feedback with the masked conversation of its session; a bad rating counts as a failed turn."""
        if self.feedback is None:
            raise KefuError("feedback store not configured")
        sid = record.get("session_id")
        session = self.sessions.peek(caller_id, sid, record.pop("customer_id", None)) if sid else None
        record = {**record, "source": source, "conversation": list(session.turns) if session else [],
                  "model": record.get("model")}
        record.setdefault("meta", {})
        if session is not None:
            record["meta"] = {**record["meta"], "intents": list(session.intents)}
            if record.get("kind") == "rating" and (record.get("rating") or 0) < 0:
                session.failures += 1
        return self.feedback.add(record)
