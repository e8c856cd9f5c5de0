"""Train as you serve: each agent turn of the logs rendered the way serving renders that turn.

Serving shows the model, for an agent turn, ``kefu.kg.prompt.model_messages``: the shop's system prompt with the
facts the knowledge graph retrieved for the turn, then the last messages of the conversation; the model refers to
figures through slots (``kefu.kg.slots``) that synthesis fills. Training on the plain logs teaches it the opposite
(figures as text, no facts to copy them from). Here each agent turn becomes one example:

* the messages before it, rendered by :func:`render_turn` — the facts ``kefu.kg.retrieval.retrieve`` gives for the
  customer's words since the previous agent turn, at the turn's time (``meta.date``, else the shop clock), for the
  asking customer (``meta.customer_id``, else the owner of an order number named in the conversation or in
  ``meta.refs.order_no``, else nobody) — the one function evaluation renders its contexts with too;
* the agent's reply with the facts it states turned into slots (``slotify`` with this turn's slot values), the only
  supervised message. A figure the reply states that the KG does not back stays text and is counted
  (:class:`GroundingStats`).
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from kefu.clock import parse_time, shop_now
from kefu.kg.prompt import conversation, model_messages, turn_exemplars
from kefu.kg.replies import ReplyIndex
from kefu.kg.retrieval import Facts, retrieve
from kefu.kg.slots import SLOT, slot_values, slotify
from kefu.kg.store import KnowledgeGraph
from kefu.text.claims import claims, evidence_keys, order_numbers
from kefu.types import Dialogue, KefuError

# our own masks and JDDC's for an order number: the lookup gets the number back when the dialogue's record knows it
ORDER_MASKS = ("[订单号]", "[订单x]")
# a masked value that is a slot once this turn's facts hold it (prepare masks tracking numbers as [物流单号])
MASK_SLOTS = {"[物流单号]": "运单号"}


@dataclass
class Rendered:
    """One agent turn as serving shows it: ``messages`` (system prompt with the facts, then the last messages) and
    the facts they came from."""

    messages: list[dict[str, str]]
    facts: Facts
    customer_id: str | None
    at: datetime


@dataclass
class GroundedExample:
    """A training example: ``messages`` and the index of the one assistant message the loss covers."""

    messages: list[dict[str, str]]
    supervise: int
    source: str


@dataclass
class GroundingStats:
    """What grounding did to the agent turns' facts: ``slots`` facts the reply states that became slots,
    ``backed_text`` figures the facts back but no slot names (kept as text, still verifiable), ``customer`` figures
    the customer said themselves, ``unbacked`` figures neither backs (kept as text)."""

    dialogues: int = 0
    turns: int = 0
    turns_with_facts: int = 0
    slots: int = 0
    backed_text: int = 0
    customer: int = 0
    unbacked: int = 0
    slot_names: Counter = field(default_factory=Counter)
    unbacked_kinds: Counter = field(default_factory=Counter)
    undated: int = 0  # dialogues without a usable meta.date (rendered at the shop clock)

    @property
    def stated(self) -> int:
        return self.slots + self.backed_text + self.customer + self.unbacked

    @property
    def kg_backed_share(self) -> float | None:
        """Of the facts agent replies state (the customer's own words aside), the share the KG backs."""
        total = self.slots + self.backed_text + self.unbacked
        return (self.slots + self.backed_text) / total if total else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["slot_names"] = dict(self.slot_names.most_common())
        out["unbacked_kinds"] = dict(self.unbacked_kinds.most_common())
        out["kg_backed_share"] = self.kg_backed_share
        return out


# ----------------------------------------------------------------------------------------------- the knowledge graph

@contextmanager
def open_kg(spec: str | Path | KnowledgeGraph) -> Iterator[KnowledgeGraph]:
    """The knowledge graph ``spec`` names: an open graph, a SQLAlchemy URL, a ``.db`` file, or a shop folder (or
    knowledge files) imported into a temporary SQLite graph that is removed afterwards."""
    if isinstance(spec, KnowledgeGraph):
        yield spec
        return
    text = str(spec)
    if "://" in text:
        kg = KnowledgeGraph.open(text)
        try:
            yield kg
        finally:
            kg.close()
        return
    path = Path(text)
    if not path.exists():
        raise KefuError(f"{path}: knowledge graph not found (a SQLAlchemy URL, a .db file or a shop folder)")
    if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
        kg = KnowledgeGraph.open(f"sqlite:///{path.resolve()}")
        try:
            yield kg
        finally:
            kg.close()
        return
    kg = KnowledgeGraph.scratch()  # private: importing a shop folder for this run needs no kg:write
    try:
        kg.import_path(path)
        yield kg
    finally:
        kg.close()


# ----------------------------------------------------------------------------------------------- one turn

def turn_time(meta: dict[str, Any]) -> datetime | None:
    """The dialogue's time (``meta.date``, ISO 8601 with its offset), or None when it has none or it is unusable."""
    value = meta.get("date")
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_time(value, "meta.date")
    except KefuError:
        return None


def order_numbers_named(messages: Sequence[dict[str, str]], meta: dict[str, Any] | None = None) -> list[str]:
    """Order numbers the conversation names (its text, then the record's ``meta.refs.order_no``), in order."""
    found = [no for m in messages for no in order_numbers(m["content"])]
    refs = (meta or {}).get("refs") or {}
    for key in ("order_no", "order_nos"):
        value = refs.get(key) if isinstance(refs, dict) else None
        found.extend([value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)])
    return list(dict.fromkeys(re.sub(r"[ -]", "", no) for no in found))


def asking_customer(kg: KnowledgeGraph, messages: Sequence[dict[str, str]],
                    meta: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
    """``(customer_id, order_no)``: the record's ``meta.customer_id`` when given, else the owner of the first order
    number named that the KG knows; the order number is the one that customer owns (None when none)."""
    meta = meta or {}
    customer = meta.get("customer_id") if isinstance(meta.get("customer_id"), str) else None
    for no in order_numbers_named(messages, meta):
        order = kg.order(no)
        if order is not None and (customer is None or order.customer_id == customer):
            return order.customer_id, no
    return customer, None


def lookup_text(history: Sequence[dict[str, str]], order_no: str | None = None) -> str:
    """What serving retrieves facts for: the customer's words since the previous agent turn (a masked order number
    given back when the record knows it, as the customer typed it)."""
    words: list[str] = []
    for message in reversed(history):
        if message["role"] == "assistant":
            break
        if message["role"] == "user":
            words.append(message["content"])
    text = "\n".join(reversed(words))
    if order_no:
        for mask in ORDER_MASKS:
            text = text.replace(mask, order_no)
    return text


def render_turn(kg: KnowledgeGraph, history: Sequence[dict[str, str]], *, shop: str = "本店",
                customer_id: str | None = None, at: datetime | None = None, order_no: str | None = None,
                replies: ReplyIndex | None = None, exemplars: int = 0,
                exclude_dialogue: str | None = None) -> Rendered:
    """The messages serving shows the model for the agent turn after ``history``: the KG's facts for the customer's
    words at ``at`` (default: the shop clock) for ``customer_id`` and ``exemplars`` of the shop's past ``replies``
    (``kefu.kg.prompt.turn_exemplars``, never ``exclude_dialogue``'s own), through
    ``kefu.kg.prompt.model_messages`` — the one rendering training and evaluation share with serving."""
    at = at or shop_now()
    facts = retrieve(kg, lookup_text(history, order_no), customer_id=customer_id, at=at)
    shown = turn_exemplars(replies, conversation(history), exemplars, exclude_dialogue)
    messages = model_messages(list(history), facts.prompt_block or None, shop=shop, exemplars=shown)
    return Rendered(messages, facts, customer_id, at)


def render_dialogue_turn(kg: KnowledgeGraph, dialogue: Dialogue, index: int, *, shop: str = "本店",
                         replies: ReplyIndex | None = None, exemplars: int = 0) -> Rendered:
    """:func:`render_turn` for the agent message ``index`` of a prepared dialogue (its time and customer from its
    record; exemplars from other dialogues only)."""
    messages = [{"role": t.role, "content": t.content} for t in dialogue.messages]
    customer, order_no = asking_customer(kg, messages[:index + 1], dialogue.meta)
    return render_turn(kg, messages[:index], shop=shop, customer_id=customer, at=turn_time(dialogue.meta),
                       order_no=order_no, replies=replies, exemplars=exemplars, exclude_dialogue=dialogue.id)


def _one_claim(value: str) -> bool:
    """Whether ``value`` is one figure as a whole (``¥1599``, ``91件``, ``已发货``), not words that hold one."""
    found = claims(value)
    return len(found) == 1 and found[0].start == 0 and found[0].end == len(value)


def ground_reply(reply: str, facts: Facts, history: Sequence[dict[str, str]],
                 stats: GroundingStats | None = None) -> str:
    """``reply`` with the facts it states as slots (``slotify`` with this turn's slot values; our masked tracking
    number becomes ``[运单号]`` when the facts hold one); counts what stayed text into ``stats``."""
    values = slot_values(facts)
    before = Counter(m.group() for m in SLOT.finditer(reply))
    # words first (a product name, a carrier, a tracking event), verbatim, longest first: a name holding a figure
    # ("珠峰800蓬鹅绒羽绒服") must become [商品] whole, not lose its "800蓬" to a figure's slot
    figures = {name: value for name, value in values.items() if _one_claim(value)}
    text = reply
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if name not in figures and len(value) >= 2:
            text = text.replace(value, f"[{name}]")
    text = slotify(text, figures)
    for mask, name in MASK_SLOTS.items():
        if name in values:
            text = text.replace(mask, f"[{name}]")
    if stats is None:
        return text
    after = Counter(m.group() for m in SLOT.finditer(text))
    added = after - before
    stats.slots += sum(added.values())
    stats.slot_names.update({k[1:-1]: n for k, n in added.items()})
    fact_keys = evidence_keys([facts.prompt_block or ""] + [str(f.get("text", "")) for f in facts.facts
                                                            if isinstance(f, dict)])
    customer_keys = evidence_keys(m["content"] for m in history if m["role"] == "user")
    for claim in claims(text):
        if claim.key in fact_keys:
            stats.backed_text += 1
        elif claim.key in customer_keys:
            stats.customer += 1
        else:
            stats.unbacked += 1
            stats.unbacked_kinds[claim.kind] += 1
    return text


def grounded_examples(kg: KnowledgeGraph, dialogue: Dialogue, *, shop: str = "本店", train_on: str = "all_assistant",
                      source: str = "", stats: GroundingStats | None = None, replies: ReplyIndex | None = None,
                      exemplars: int = 0) -> list[GroundedExample]:
    """One example per agent turn that follows a customer turn (the last one only with ``train_on=last_assistant``):
    the turn rendered as serving renders it (:func:`render_dialogue_turn`, as evaluation renders it), then the
    agent's reply with its facts as slots, supervised."""
    stats = stats if stats is not None else GroundingStats()
    stats.dialogues += 1
    stats.undated += turn_time(dialogue.meta) is None
    messages = [{"role": t.role, "content": t.content} for t in dialogue.messages]
    out: list[GroundedExample] = []
    for k in agent_turns(messages, last_only=train_on == "last_assistant"):
        rendered = render_dialogue_turn(kg, dialogue, k, shop=shop, replies=replies, exemplars=exemplars)
        stats.turns += 1
        stats.turns_with_facts += bool(rendered.facts.facts)
        reply = ground_reply(messages[k]["content"], rendered.facts, messages[:k], stats)
        example = rendered.messages + [{"role": "assistant", "content": reply}]
        out.append(GroundedExample(example, len(example) - 1, f"{source}#{k}" if source else f"{dialogue.id}#{k}"))
    return out


def agent_turns(messages: Sequence[dict[str, str]], last_only: bool = False) -> list[int]:
    """Indices of the agent messages that answer a customer (a non-empty reply after some customer message)."""
    seen_user, out = False, []
    for k, m in enumerate(messages):
        if m["role"] == "user":
            seen_user = True
        elif m["role"] == "assistant" and seen_user and m["content"].strip():
            out.append(k)
    return out[-1:] if last_only else out
