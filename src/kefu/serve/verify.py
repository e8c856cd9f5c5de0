"""Verification before sending: every fact a reply states must be a fact of this request.

``Evidence`` is what this request may state: the retrieved facts' lines, the order tool's result, the shop's
catalogue words linked in them, and the customer's own words. ``verify_reply`` checks a reply (or the part of it
about to be sent) and returns a ``Verdict`` whose reasons name what failed:

- ``invented``: a figure (money, discount, number with a unit, bare number, date, time), an order or tracking
  number, a status word, or a product, colour or size of the catalogue that no fact of this request backs;
- ``slot``: a slot (``[运单号]``) this request's facts cannot fill;
- ``loop``: the reply repeats itself; ``echo``: it repeats the system prompt; ``pii``: it holds personal data the
  customer did not write; ``empty``: nothing to say;
- ``handoff``: it says a person takes over (已为您转接人工, 我是人工客服): only kefu's handoff does that — a model
  that says so leaves the customer waiting for nobody (offering one, 需要的话我帮您转人工, is fine).

The pipeline regenerates once under constraints on a failed verdict, then replaces the reply with the light path's
answer or a handoff, and counts each replacement by its reason (``kefu.serve.pipeline``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Callable, Iterable

from kefu.kg.prompt import FACTS_HEADER
from kefu.kg.retrieval.facts import BLOCK_HEADER
from kefu.kg.slots import SLOT, SLOTS
from kefu.serve.text import NEGATION
from kefu.text.claims import claims, evidence_keys
from kefu.text.numbers import format_fen
from kefu.text.pii import PLACEHOLDERS, find_pii

REASONS = ("invented", "slot", "loop", "echo", "pii", "empty", "handoff")
# the reply acts as if a person took over: a transfer said done or under way, or a human speaking
CLAIMED_HANDOFF = re.compile(r"(?:已经?|马上|正在|这就|现在|立即|立刻)(?:为您|给您|帮您|替您)?转(?:接|给|到)?(?:人工|真人|专员|客服)"
                             r"|(?:我是|这里是|这边是)(?:人工|真人)|人工客服\S{0,2}为您服务|当前排队")
CATALOGUE_KINDS = ("product", "color", "size")
OPTION_KINDS = ("color", "size")  # offered only when the facts hold them (the customer naming one is no evidence)
# said absent just before the entity: "没有红色", "不支持XL码", "无4XL", "缺M码" (the negation words are serve.text's)
NEGATED = re.compile(rf"(?:{NEGATION.pattern}|缺)有?[的了货]?\S{{0,2}}$")
_MASKS = frozenset(PLACEHOLDERS.values())
ECHO_CHARS = 12
PROMPT_MARKERS = (BLOCK_HEADER, FACTS_HEADER)  # a run this long copied from the system prompt is an echo, not an answer
_CLAUSE = re.compile(r"[^，,。！？!?；;、\n]+")
_REPEAT = re.compile(r"(.{2,24}?)\1{2,}")
_NOISE = re.compile(r"[\s，。！？、,.!?~～：:；;“”\"'（）()…—-]+")


@dataclass
class Evidence:
    """What a request's reply may state: claim keys (``kefu.text.claims``) and linked catalogue entities."""

    keys: set[str] = field(default_factory=set)
    entities: set[tuple[str, str]] = field(default_factory=set)
    system_prompt: str = ""
    customer_text: str = ""
    fact_text: str = ""  # personal data the facts hold (this customer's tracking number) may be said back
    # the colours and sizes the shop's facts name: one the customer asked about but the facts do not hold may only
    # be said as absent ("没有红色"), never offered ("有红色的哦")
    fact_entities: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def gather(cls, fact_texts: Iterable[str], customer_texts: Iterable[str], *, system_prompt: str = "",
               link: Callable[[str], list[dict]] | None = None) -> "Evidence":
        """Evidence from fact lines and the customer's messages; ``link(text)`` finds catalogue entities (the KG's
        linker) so products, colours and sizes can be checked too."""
        customer = "\n".join(t for t in customer_texts if t)
        texts = [t for t in fact_texts if t] + [customer]
        entities: set[tuple[str, str]] = set()
        from_facts: set[tuple[str, str]] = set()
        if link is not None:
            for n, text in enumerate(texts):
                for e in link(text):
                    if e["type"] not in CATALOGUE_KINDS:
                        continue
                    entities.add((e["type"], str(e["value"])))
                    if n < len(texts) - 1 and not _negated(text, e):  # "没有红色" in a fact holds no red
                        from_facts.add((e["type"], str(e["value"])))
        return cls(evidence_keys(texts), entities, system_prompt, customer, "\n".join(texts), from_facts)


def _negated(text: str, entity: dict) -> bool:
    """Whether a linked colour or size is said absent where it stands ("没有红色", "不支持4XL码")."""
    return bool(NEGATED.search(text[max(0, entity["start"] - 4):entity["start"]]))


def fact_texts(facts: Any, tool_result: dict | None) -> list[str]:
    """The lines a request's facts say (the KG's fact lines and their data, the tool result), for ``Evidence``; the
    light path's composed answer is not evidence, it is checked like any reply. Money in the data (``*_fen``
    fields, integer fen by the shop's convention) is written as money, so ``cap_fen: 10000`` backs "最多减¥100"."""
    out = [str(getattr(facts, "prompt_block", "") or "")]
    for fact in getattr(facts, "facts", None) or []:
        if isinstance(fact, dict):
            out.append(str(fact.get("text", "")))
            data = fact.get("data") or {}
            out.append(json.dumps(data, ensure_ascii=False, default=str))
            out.extend(_money_fields(data))
    if isinstance(tool_result, dict):
        out.append(json.dumps(tool_result, ensure_ascii=False, default=str))
        out.extend(_money_fields(tool_result))
    return out


def _money_fields(data: Any) -> list[str]:
    """``¥…`` for every integer ``*_fen`` value anywhere in ``data``."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key).endswith("_fen") and isinstance(value, int) and not isinstance(value, bool):
                found.append(f"¥{format_fen(value)}")
            else:
                found.extend(_money_fields(value))
    elif isinstance(data, list):
        for item in data:
            found.extend(_money_fields(item))
    return found


@dataclass
class Verdict:
    """``ok`` when nothing failed; ``problems`` are ``reason: detail`` strings, ``reason`` the first one's reason."""

    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str | None:
        return self.problems[0].split(":", 1)[0] if self.problems else None


def looping(text: str) -> bool:
    """A reply that repeats itself back to back: a run of 2–24 characters with a letter in it said three times in a
    row ("尺码是尺码，尺码是尺码，尺码是尺码", "请问还有其他可以帮到您的吗?" ×3), or the same clause three times
    in a row. A phrase that recurs apart (each exception ending 不支持7天无理由退货) is a list, not a loop; digit
    runs (5000000) are figures, judged as figures."""
    flat = _NOISE.sub("", text)
    for m in _REPEAT.finditer(flat):
        if any(not ch.isdigit() for ch in m.group(1)):
            return True
    clauses = [_NOISE.sub("", c) for c in _CLAUSE.findall(text)]
    clauses = [c for c in clauses if c]
    return any(clauses[i] == clauses[i + 1] == clauses[i + 2] for i in range(len(clauses) - 2))


def echoes(text: str, system_prompt: str) -> bool:
    """Whether ``text`` copies a run of ``ECHO_CHARS`` or more characters from the system prompt, or a header of
    what the model is given (【店铺知识】, 已知事实：)."""
    if any(marker in text for marker in PROMPT_MARKERS):
        return True
    if not system_prompt:
        return False
    a, b = _NOISE.sub("", text), _NOISE.sub("", system_prompt)
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    # a long copied run, or a short reply that is mostly a piece of the prompt ("你是「本店」的在线客服。")
    return match.size >= ECHO_CHARS or (match.size >= 6 and match.size >= 0.8 * len(a))


def parrots(text: str, customer_text: str) -> bool:
    """Whether ``text`` is mostly the customer's own words said back ("我这单你保证明天一定送到吗…"); stray Latin
    letters (a small model's "icional") do not count towards the reply."""
    a, b = re.sub(r"[A-Za-z]+", "", _NOISE.sub("", text)), _NOISE.sub("", customer_text)
    if len(a) < 6 or not b:
        return False
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size >= 0.8 * len(a)


def verify_reply(text: str, evidence: Evidence, *, link: Callable[[str], list[dict]] | None = None) -> Verdict:
    """Check ``text`` against ``evidence``; slots must already be filled (an unfilled one fails)."""
    problems: list[str] = []
    if not _NOISE.sub("", text):
        return Verdict(["empty: no text"])
    for m in SLOT.finditer(text):  # a placeholder the compliance filter put in is personal data that was masked
        slot = m.group("name") in SLOTS or bool(m.group("jddc"))
        problems.append(f"pii: masked {m.group()}" if m.group() in _MASKS and not slot else f"slot: {m.group()}")
    for claim in claims(text):
        if claim.key not in evidence.keys:
            problems.append(f"invented: {claim.kind} {claim.text}")
    if link is not None:
        for entity in link(text):
            key = (entity["type"], str(entity["value"]))
            if entity["type"] in CATALOGUE_KINDS and key not in evidence.entities:
                problems.append(f"invented: {entity['type']} {entity['text']}")
            elif entity["type"] in OPTION_KINDS and key not in evidence.fact_entities and not _negated(text, entity):
                problems.append(f"invented: {entity['type']} {entity['text']} (asked for; the shop's facts do not "
                                "hold it)")
    if CLAIMED_HANDOFF.search(text):
        problems.append("handoff: the reply says a person takes over; only kefu hands off")
    if looping(text):
        problems.append("loop: the reply repeats itself")
    if echoes(text, evidence.system_prompt):
        problems.append("echo: the reply repeats the system prompt")
    elif parrots(text, evidence.customer_text):
        problems.append("echo: the reply repeats the customer's words")
    for span in find_pii(text):
        if span.text not in evidence.fact_text:  # fact_text holds the customer's words too
            problems.append(f"pii: {span.type}")
    return Verdict(problems)
