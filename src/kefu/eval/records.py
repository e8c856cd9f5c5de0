"""Reading evaluation inputs: prepared test dialogues (samples to generate for) and prediction files (to score).

Every problem is a :class:`KefuError` naming the file and line, so a bad line in a 50k-line file is found at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kefu.artifacts.dialogues import dialogue_from_json, iter_jsonl, messages_of, read_dialogues
from kefu.eval.business import check_fact, normalize_fact
from kefu.eval.metrics import parse_references
from kefu.kg.slots import slot_values
from kefu.train.grounded import open_kg, render_dialogue_turn
from kefu.types import Dialogue, KefuError


def load_references(path: str | Path) -> dict[str, tuple[str, dict]]:
    """References by id, from a prepared ``test.jsonl`` (dialogues: one sample per agent turn, ids ``DIALOGUE#TURN``)
    or from JSONL lines with ``id`` and ``references`` (plus optional ``intent``, ``facts``, ``context`` ...)."""
    path = Path(path)
    out: dict[str, tuple[str, dict]] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if "messages" in obj:
            found = [(s["id"], s) for s in samples_from_dialogue(dialogue_from_json(obj, where), where=where)]
        else:
            if obj.get("id") is None:
                raise KefuError(f"{where}: missing field 'id' (needed to match predictions)")
            refs = _references(obj, where)
            found = [(str(obj["id"]), dict(obj, references=refs))]
        for rid, rec in found:
            if rid in out:
                raise KefuError(f"{where}: duplicate id {rid!r} (first at {out[rid][0]})")
            out[rid] = (where, rec)
    return out


def _references(obj: dict, where: str) -> list[str]:
    refs = obj.get("references", obj.get("reference"))
    if refs is None:
        raise KefuError(f"{where}: missing field 'references'")
    if isinstance(refs, str):
        refs = parse_references(refs)
    elif isinstance(refs, list) and all(isinstance(r, str) for r in refs):
        refs = [r for ref in refs for r in parse_references(ref)]
    else:
        raise KefuError(f"{where}: field 'references' must be a list of strings")
    if not refs:
        raise KefuError(f"{where}: field 'references' has no non-empty reference")
    return refs


def load_predictions(path: str | Path, references: str | Path | None = None) -> list[dict]:
    """Prediction records for ``kefu eval score``: ``prediction``, ``references`` (list, or one string that may use
    JDDC's ``<sep>``/``!@@@!``), optional ``id``, ``intent``, ``predicted_intent``, ``facts``, ``latency_ms``,
    ``context``. Ids, when given, must be unique.

    With ``references`` (a file, see :func:`load_references`) every prediction line needs an ``id`` and takes its
    references (and intent, facts, context when it has none) from the line with that id; ids on either side without
    a partner are errors naming file and line.
    """
    path = Path(path)
    refs_by_id = load_references(references) if references is not None else None
    records, ids = [], {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if refs_by_id is not None:
            if obj.get("id") is None:
                raise KefuError(f"{where}: missing field 'id' (needed to match {references})")
            partner = refs_by_id.get(str(obj["id"]))
            if partner is None:
                raise KefuError(f"{where}: id {str(obj['id'])!r} is not in {references}")
            if "references" in obj or "reference" in obj:
                raise KefuError(f"{where}: has its own 'references' while {references} is given; use one")
            obj = {**{k: v for k, v in partner[1].items() if not k.startswith("_")}, **obj}
        if "prediction" not in obj:
            raise KefuError(f"{where}: missing field 'prediction'")
        if not isinstance(obj["prediction"], str):
            raise KefuError(f"{where}: field 'prediction' must be a string")
        refs = _references(obj, where)
        if obj.get("latency_ms") is not None and not isinstance(obj["latency_ms"], (int, float)):
            raise KefuError(f"{where}: field 'latency_ms' must be a number")
        if obj.get("facts") is not None and not isinstance(obj["facts"], list):
            raise KefuError(f"{where}: field 'facts' must be a list")
        rid = obj.get("id")
        if rid is not None:
            rid = str(rid)
            if rid in ids:
                raise KefuError(f"{where}: duplicate id {rid!r} (first on line {ids[rid]})")
            ids[rid] = lineno
        record = dict(obj, references=refs, _where=where)
        record["id"] = rid if rid is not None else f"line{lineno}"
        records.append(record)
    if refs_by_id is not None:
        missing = [(where, rid) for rid, (where, _) in refs_by_id.items() if rid not in ids]
        if missing:
            where, rid = missing[0]
            raise KefuError(f"{where}: id {rid!r} has no prediction in {path} ({len(missing)} ids unmatched)")
    return records


def samples_from_dialogue(dialogue: Dialogue, last_turn_only: bool = False, where: str = "", *, kg: Any = None,
                          shop: str = "本店", replies: Any = None, exemplars: int = 0) -> list[dict]:
    """Each agent turn of a prepared dialogue becomes a sample: ``context`` = the messages before it, ``references``
    = that turn (split on ``<sep>``/``!@@@!``), ``intent`` = the intent of the last customer turn before it.

    With ``kg`` (an open ``KnowledgeGraph``) the context is the turn rendered exactly as training renders it
    (``kefu.train.grounded.render_dialogue_turn``: the system prompt with the facts the KG gives for the turn, then
    the last messages; ``exemplars`` of the shop's past ``replies`` when the run was trained with them), and
    ``slots`` holds the turn's slot values (``kefu.kg.slots.slot_values``) to fill a
    prediction's slots with before it is scored; ``facts_block`` is the facts shown.

    Dialogue-level ``meta.facts`` apply to a turn when the fact carries that turn's index (``turn``) or, lacking
    one, when the reference itself states the fact correctly.
    """
    if not dialogue.messages:
        raise KefuError(f"{where}: field 'messages' must be a non-empty list")
    messages = messages_of(dialogue)
    meta = dialogue.meta
    intents = meta.get("intents") or []
    facts = meta.get("facts") or []
    did = dialogue.id or where
    samples, user_turns = [], 0
    agent_turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    if last_turn_only:
        agent_turns = agent_turns[-1:]
    for k, m in enumerate(messages):
        if m["role"] == "user":
            user_turns += 1
        if k not in agent_turns or user_turns == 0:
            continue
        refs = parse_references(m["content"])
        if not refs:
            continue
        turn_facts = []
        for fact in facts:
            norm = normalize_fact(fact)
            if norm is None:
                continue
            turn = fact.get("turn") if isinstance(fact, dict) else None
            if (turn == k) if turn is not None else check_fact(refs[0], norm) == "correct":
                turn_facts.append(norm)
        sample = {"id": f"{did}#{k}", "dialogue_id": did, "turn": k, "context": messages[:k], "references": refs,
                  "intent": intents[user_turns - 1] if user_turns - 1 < len(intents) else None}
        if kg is not None:
            rendered = render_dialogue_turn(kg, dialogue, k, shop=shop, replies=replies, exemplars=exemplars)
            sample.update(context=rendered.messages, slots=slot_values(rendered.facts),
                          facts_block=rendered.facts.prompt_block)
            if rendered.customer_id and not meta.get("customer_id"):
                sample["customer_id"] = rendered.customer_id
        if turn_facts:
            sample["facts"] = turn_facts
        for key in ("customer_id", "date", "refs"):  # refs: what masked spans stood for (an order number)
            if meta.get(key):
                sample[key] = meta[key]
        samples.append(sample)
    return samples


def load_test_samples(path: str | Path, last_turn_only: bool = False, max_samples: int | None = None, *,
                      kg: Any = None, shop: str = "本店", replies: Any = None, exemplars: int = 0) -> list[dict]:
    """All samples of a prepared ``test.jsonl`` in file order (optionally only the first ``max_samples``).

    ``kg`` (an open graph, a SQLAlchemy URL, a ``.db`` file or a shop folder; see ``kefu.train.grounded.open_kg``):
    contexts rendered with each turn's facts (and ``exemplars`` of ``replies``, a ``ReplyIndex``), as training with
    ``train.kg_url`` rendered them."""
    path = Path(path)
    if kg is not None:
        with open_kg(kg) as graph:
            return _load_samples(path, last_turn_only, max_samples, graph, shop, replies, exemplars)
    return _load_samples(path, last_turn_only, max_samples, None, shop)


def _load_samples(path: Path, last_turn_only: bool, max_samples: int | None, kg: Any, shop: str,
                  replies: Any = None, exemplars: int = 0) -> list[dict]:
    samples: list[dict] = []
    for prepared in read_dialogues(path, name=None, empty_ok=False):
        samples.extend(samples_from_dialogue(prepared.dialogue, last_turn_only, where=prepared.where, kg=kg,
                                             shop=shop, replies=replies, exemplars=exemplars))
        if max_samples and len(samples) >= max_samples:
            return samples[:max_samples]
    if not samples:
        raise KefuError(f"{path}: no agent turn after a customer turn to evaluate")
    return samples
