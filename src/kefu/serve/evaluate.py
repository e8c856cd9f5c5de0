"""Evaluate the system, not only the model: held-out agent turns through the serving pipeline, in-process.

Each sample of a prepared ``test.jsonl`` (one per agent turn, its context before it: ``kefu.eval.records``) is sent
to a ``ChatService`` built as ``kefu serve`` builds it (``kefu.serve.build.build_service``): router, knowledge graph,
order tools, the model when a run is given, verification and synthesis. Without a run there is no model: turns the
router sends to the full model get what serving gives when the engine is unavailable (the light answer, else a
handoff) — the answers a shop serving without a tuned run would give.

Per sample, one JSON line is written and flushed as soon as the reply is made (``kefu.eval.predictions``; a rerun
with the same ``out`` resumes): prediction, references, path, router reason, replacement reason, verification
problems, latency, intents, the key facts of the turn, and the claims of the reply that this turn's shop facts do not
back. Each sample runs in a fresh session primed from its own context (entities, failure signals, earlier turns), so
a sample's answer does not depend on which samples ran before it (a resume gives the same answers); the context is
passed whole, as a client resends it, and the model sees its last ``kefu.kg.prompt.HISTORY`` messages as in serving.
Dialogues are read one at a time and nothing but the finished lines is kept, so memory stays bounded on long logs.

The shop's clock is set to each sample's ``date`` (the moment the customer asked: promotions in force, return
windows) unless ``sample_time=False``; without a date the shop clock (``$KEFU_SHOP_TIME`` or now) is used.

Metrics (``system_metrics``) are computed from the predictions file, never from memory:

- similarity: the eval's scorers (``kefu.eval.metrics``). ``*_single_ref``: against the first reference only;
  ``*_multi_ref`` (only when some samples have several references): NLTK multi-reference BLEU-4 and the best
  ROUGE-L over the references; ``sacrebleu``/``chrf`` are corpus-level over all references.
- key facts (``kefu.eval.business``): the KG's key facts for the customer's last message at the sample's time
  (payable price, return window, order status) plus the sample's annotated facts.
- invented facts: fact-like spans of the reply (``kefu.text.claims.claims``) whose key is not in this turn's
  ``kefu.serve.verify.Evidence`` (the facts the pipeline fetched for the turn — KG and tool results — and the
  customer's own words). ``invented_fact_rate``: share of replies with at least one; ``invented_facts_per_reply``.
  Catalogue products, colours and sizes the evidence does not hold are counted apart (``invented_catalogue_rate``).
- the system: path mix, the router's reasons (``reasons``: the shop's agents agree, a KG answer, the model...),
  replacements by reason, verification failures, handoff rate (by path), latency p50/p95.
- the retrieval baseline (``kefu.eval.baseline``): the best past reply of the train data for each sample, scored
  the same way (``retrieval_bleu4``, ``retrieval_rougeL``), and the system's ``bleu4``/``rougeL`` as a multiple of
  it (``vs_retrieval_*``); the train data is ``baseline_data``, else the run's, else ``train.jsonl`` beside the
  test file.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from kefu.artifacts.dialogues import read_dialogues, write_jsonl
from kefu.clock import SHOP_TIME_ENV
from kefu.eval.baseline import baseline_metrics, train_data_of_run
from kefu.eval.business import kg_facts, last_user_message, normalize_fact
from kefu.eval.metrics import lf_bleu4, lf_rouge, score_predictions
from kefu.eval.predictions import PredictionWriter, read_predictions
from kefu.eval.records import samples_from_dialogue
from kefu.eval.report import write_report
from kefu.kg.prompt import HISTORY
from kefu.kg.replies import ReplyIndex
from kefu.kg.retrieval import CUES, link
from kefu.kg.store import KnowledgeGraph
from kefu.progress import Progress
from kefu.serve.build import build_service
from kefu.serve.config import ServeConfig
from kefu.serve.gateway import mask_text
from kefu.serve.pipeline import ChatService, Found
from kefu.serve.sessions import SessionStore
from kefu.serve.text import key_entities, normalise
from kefu.serve.verify import CATALOGUE_KINDS, Evidence, fact_texts
from kefu.text.claims import claims, order_numbers
from kefu.train.grounded import asking_customer
from kefu.types import KefuError

__all__ = ["open_kg", "build_eval_service", "iter_samples", "count_samples", "unbacked", "evaluate_system",
           "system_metrics", "PREDICTIONS", "CALLER"]

PREDICTIONS = "predictions.jsonl"
CALLER = "eval"  # the API caller the samples are sent as


class _NoEngine:
    """A placeholder handed to ``build_service`` so that it loads no model; replaced by ``None`` at once."""


# -- building the service ------------------------------------------------------------------------------------------
def open_kg(spec: str | Path | None, config: ServeConfig | None = None) -> tuple[KnowledgeGraph, str]:
    """The knowledge graph to evaluate against and how it was found: a shop folder (imported into a private scratch
    graph, removed when closed), a ``.db`` file, a SQLAlchemy URL, or (None) the serve config's ``kg_url`` / the
    default graph under ``$KEFU_HOME``."""
    if spec is None:
        url = (config or ServeConfig()).kg_url
        return KnowledgeGraph.open(url), url or "default ($KEFU_HOME/kg.db)"
    text = str(spec)
    if "://" in text:
        return KnowledgeGraph.open(text), text
    path = Path(text)
    if path.is_dir():  # a private scratch graph: changes no shared state, so it needs no kg:write
        kg = KnowledgeGraph.scratch()
        kg.import_path(path, replace=True)
        return kg, f"{path} (imported)"
    if path.is_file():
        return KnowledgeGraph.open(f"sqlite:///{path.resolve()}"), str(path)
    raise KefuError(f"--kg {text}: not a shop folder, a .db file or a database URL")


def build_eval_service(config: ServeConfig, *, run: str | None = None, kg: Any = None, engine: Any = None
                       ) -> ChatService:
    """A ``ChatService`` as ``kefu serve`` builds it. Without ``run`` (and no ``engine`` given) it has no model."""
    if run is None and engine is None:
        service = build_service(config, kg=kg, engine=_NoEngine())
        service.engine = None
        service.base_model = "none"
    else:
        service = build_service(config, run=run, kg=kg, engine=engine)
    # samples run in fresh sessions of their own: keep only a few alive (memory stays bounded)
    service.sessions = SessionStore(64, service.sessions.max_turns)
    return service


# -- the samples ---------------------------------------------------------------------------------------------------
def iter_samples(data: str | Path, *, last_turn_only: bool = False) -> Iterator[dict]:
    """The samples of a prepared ``test.jsonl``, one dialogue at a time (nothing else held)."""
    for prepared in read_dialogues(Path(data), name=None, empty_ok=False):
        yield from samples_from_dialogue(prepared.dialogue, last_turn_only, where=prepared.where)


def count_samples(data: str | Path, *, last_turn_only: bool = False, max_samples: int | None = None) -> int:
    n = 0
    for _ in iter_samples(data, last_turn_only=last_turn_only):
        n += 1
        if max_samples and n >= max_samples:
            break
    return n


MASKED_ORDER = re.compile(r"\[(?:订单号|物流单号|订单x)\]")  # where prepare masked the number the customer typed


def _prime(service: ChatService, session, context: list[dict[str, str]], max_turns: int) -> None:
    """What the session of this conversation would hold before the turn: the earlier turns (masked), the entities the
    customer named (order numbers, products, sizes, colours) and the failure signals."""
    previous = None
    for message in context[:-1] if context and context[-1]["role"] == "user" else context:
        if message["role"] == "user":
            text = message["content"]
            masked = mask_text(text)
            if service.router.is_failure_signal(text) or (previous is not None and previous == normalise(masked)):
                session.failures += 1
            previous = normalise(masked)
            ents = key_entities(text)
            for kind, values in (("order_no", ents.order_nos), ("sku", ents.skus), ("size", ents.sizes),
                                 ("color", ents.colors)):
                if values:
                    session.remember(kind, values)
            session.add_turn("user", masked, max_turns)
        elif message["role"] == "assistant":
            session.add_turn("assistant", mask_text(message["content"]), max_turns)


@contextmanager
def _shop_clock(when: str | None):
    """The shop's clock at ``when`` (ISO 8601 with offset) for the duration; unchanged when None or naive."""
    ok = False
    if when:
        try:
            ok = datetime.fromisoformat(str(when)).tzinfo is not None
        except ValueError:
            ok = False
    if not ok:
        yield
        return
    old = os.environ.get(SHOP_TIME_ENV)
    os.environ[SHOP_TIME_ENV] = str(when)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SHOP_TIME_ENV, None)
        else:
            os.environ[SHOP_TIME_ENV] = old


def unbacked(text: str, evidence: Evidence, link_fn: Callable[[str], list[dict]] | None = None
             ) -> tuple[list[str], list[str]]:
    """The claims of ``text`` (``kind text``) the evidence does not back, and the catalogue entities it does not hold.
    Slots (``[运单号]``) are not claims."""
    invented = [f"{c.kind} {c.text}" for c in claims(text) if c.key not in evidence.keys]
    entities = []
    if link_fn is not None:
        entities = [f"{e['type']} {e['text']}" for e in link_fn(text)
                    if e["type"] in CATALOGUE_KINDS and (e["type"], str(e["value"])) not in evidence.entities]
    return invented, entities


async def _answer(service: ChatService, sample: dict, *, kg: Any, sample_time: bool) -> dict:
    """One sample through the pipeline; the prediction line."""
    context = sample["context"]
    customer_id, order_no = sample.get("customer_id"), None
    if kg is not None:  # the asking customer, as the shop's backend would assert it, and the order a masked
        customer_id, order_no = asking_customer(kg, context, sample)  # [订单号] in the logs stood for
    session_id = f"eval-{sample['id']}"
    session = service.sessions.get(CALLER, session_id, customer_id)
    _prime(service, session, context, service.sessions.max_turns)
    if order_no:
        session.remember("order_no", [order_no])
    captured: list[Found] = []
    original = service.fetch_facts

    def capture(turn):
        found = original(turn)
        captured.append(found)
        return found

    service.fetch_facts = capture  # the facts this turn was given: what its reply may state
    try:
        with _shop_clock(sample.get("date") if sample_time else None):
            started = time.perf_counter()
            reply = await service.answer(context, caller_id=CALLER, session_id=session_id, customer_id=customer_id)
            latency_ms = (time.perf_counter() - started) * 1000
            question = last_user_message(context)
            link_fn = (lambda t: link(kg, t)) if kg is not None else None
            if captured:
                evidence, source = captured[-1].evidence, "pipeline"
            else:  # the turn ended before fetching facts (handoff, guard, cache): the KG's facts for the question
                facts = service.retriever(question, customer_id)
                evidence = Evidence.gather(fact_texts(facts, None),
                                           [m["content"] for m in context if m["role"] == "user"],
                                           system_prompt=service.system_prompt, link=link_fn)
                source = "kg"
            key_facts = [f for f in (normalize_fact(x) for x in sample.get("facts") or []) if f is not None]
            if kg is not None:  # at the moment the pipeline answered
                asked = dict(sample, customer_id=customer_id)
                last = context[-1]["content"] if context else ""
                if order_no and (MASKED_ORDER.search(last) or CUES["order"].search(last)):  # the order under discussion
                    named = MASKED_ORDER.search(last) or order_numbers(last)  # "显示签收了但我没收到": still that order
                    about = MASKED_ORDER.sub(order_no, last) if named else f"{last}（订单{order_no}）"
                    asked["context"] = context[:-1] + [dict(context[-1], content=about)]
                key_facts += kg_facts(kg, asked if sample_time else {k: v for k, v in asked.items() if k != "date"})
    finally:
        del service.fetch_facts
    invented, entities = unbacked(reply.text, evidence, link_fn)
    record = {"id": sample["id"], "dialogue_id": sample.get("dialogue_id"), "turn": sample.get("turn"),
              "intent": sample.get("intent"), "predicted_intent": reply.intent, "prediction": reply.text,
              "references": sample["references"], "path": reply.path, "reason": reply.reason,
              "replaced": reply.replaced, "verification": list(reply.verification), "fixes": list(reply.fixes),
              "cached": reply.cached, "fallback": reply.fallback, "latency_ms": round(latency_ms, 3),
              "question": question, "context": [dict(m) for m in context[-HISTORY:]], "facts": key_facts,
              "invented": invented, "invented_catalogue": entities, "evidence": source}
    for key in ("customer_id", "date"):
        if sample.get(key):
            record[key] = sample[key]
    return record


# -- the run -------------------------------------------------------------------------------------------------------
def evaluate_system(data: str | Path, out: str | Path, *, run: str | None = None, kg: Any = None,
                    config: ServeConfig | None = None, max_samples: int | None = None, last_turn_only: bool = False,
                    sample_time: bool = True, progress: bool = True, engine: Any = None,
                    baseline_data: str | Path | None = None,
                    service: ChatService | None = None, stop_after: int | None = None,
                    on_record: Callable[[dict], None] | None = None) -> dict | None:
    """Send every sample of ``data`` through the serving pipeline and score the system; writes ``out/`` (metrics.json,
    predictions.jsonl, report.html) and returns the metrics.

    ``kg``: a shop folder, a ``.db`` file, a URL or an open graph (default: the serve config's). ``run``: a finished
    training run (None: no model). ``service``/``engine`` may be injected (tests). ``stop_after``: stop after
    writing that many new predictions without scoring (returns None: a resumable partial run).
    ``baseline_data``: the train data of the retrieval baseline (see the module docstring)."""
    config = config or ServeConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kg_label = "given"
    if service is None:
        if not isinstance(kg, KnowledgeGraph):
            kg, kg_label = open_kg(kg, config)  # a shop folder is imported into a scratch graph for the run
        service = build_eval_service(config, run=run, kg=kg, engine=engine)
    else:
        kg = service.kg
    settings = {"data": str(Path(data).resolve()), "run": str(run) if run else None, "kg": kg_label,
                "last_turn_only": last_turn_only, "sample_time": sample_time}
    selected: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        with PredictionWriter(out / PREDICTIONS, settings) as writer:
            total = already = 0
            for sample in _limited(data, last_turn_only, max_samples):
                total += 1
                already += sample["id"] in writer
            with Progress(total, "kefu eval system", done=already, enabled=progress) as bar:
                for sample in _limited(data, last_turn_only, max_samples):
                    selected.append(sample["id"])
                    if sample["id"] in writer:
                        continue
                    if stop_after is not None and writer.written >= stop_after:
                        return None
                    record = loop.run_until_complete(_answer(service, sample, kg=kg, sample_time=sample_time))
                    writer.write(record)
                    if on_record is not None:
                        on_record(record)
                    bar.advance()
    finally:
        if service.engine is not None and hasattr(service.engine, "close"):
            loop.run_until_complete(service.engine.close())
        loop.close()
        if isinstance(kg, KnowledgeGraph) and kg_label.endswith("(imported)"):
            kg.close()  # removes the scratch graph
    info = {"source": "system", "data": str(data), "run": str(run) if run else None,
            "model": (getattr(service.engine, "base_name", None) or service.base_model) if service.engine is not None
            else "none (light path and handoff only)",
            "kg": kg_label, "last_turn_only": last_turn_only, "sample_time": sample_time,
            "router": "fitted" if service.router.model is not None else "rules"}
    return score_system(out, selected, info, baseline_data=_baseline_data(baseline_data, run, data))


def _baseline_data(given: str | Path | None, run: str | None, data: str | Path) -> Path | None:
    """The train data the retrieval baseline indexes: given, else the run's, else ``train.jsonl`` beside ``data``."""
    if given is not None:
        return Path(given)
    if run is not None:
        found = train_data_of_run(run)
        if found is not None:
            return found
    beside = Path(data).parent / "train.jsonl"
    return beside if beside.is_file() and beside.resolve() != Path(data).resolve() else None


def _limited(data, last_turn_only: bool, max_samples: int | None) -> Iterator[dict]:
    for n, sample in enumerate(iter_samples(data, last_turn_only=last_turn_only)):
        if max_samples and n >= max_samples:
            return
        yield sample


def score_system(out: Path, ids: list[str] | None = None, info: dict | None = None,
                 baseline_data: str | Path | None = None) -> dict:
    """Score ``out/predictions.jsonl`` (only ``ids`` when given, in that order) and write metrics.json, the scored
    predictions.jsonl and report.html; returns the metrics. ``baseline_data``: train data for the retrieval
    baseline (none: not reported)."""
    path = out / PREDICTIONS
    by_id = {str(r["id"]): r for r in read_predictions(path)}
    if ids is not None:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise KefuError(f"{path}: {len(missing)} samples have no prediction (first {missing[0]!r})")
        records = [by_id[i] for i in ids]
    else:
        records = list(by_id.values())
    rows: list[dict] = []
    metrics = system_metrics(records, rows)
    if baseline_data is not None:
        index = ReplyIndex.from_data(baseline_data)
        base, retrieved = baseline_metrics(index, records, model_metrics=metrics)
        metrics.update(base)
        metrics["retrieval_data"] = str(baseline_data)
        for row, reply in zip(rows, retrieved):
            row["retrieval_prediction"] = reply
    else:
        metrics["retrieval_data"] = None
    metrics.update(info or {})
    metrics["evaluated_at"] = datetime.now(timezone.utc).isoformat()
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / "metrics.json").write_text(json.dumps(clean, ensure_ascii=False, indent=2, default=str) + "\n",
                                      encoding="utf-8")
    # the scored lines replace the raw ones (atomically: the file is also what a rerun resumes from); lines of
    # samples outside this selection are kept as they were
    chosen = set(ids) if ids is not None else set(by_id)
    others = [r for k, r in by_id.items() if k not in chosen]
    tmp = path.with_suffix(".jsonl.tmp")
    write_jsonl(tmp, rows + others)
    os.replace(tmp, path)
    write_report(out, metrics, rows)
    return metrics


def _share(counter: Counter, n: int) -> dict[str, float]:
    return {k: v / n for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))} if n else {}


def system_metrics(records: list[dict], rows_out: list[dict] | None = None) -> dict:
    """Every metric of the system eval from its prediction records (see the module docstring)."""
    if not records:
        raise KefuError("no predictions to score")
    rows: list[dict] = [] if rows_out is None else rows_out
    metrics = score_predictions(records, per_sample_out=rows)  # key facts come from the records' ``facts``
    n = len(records)
    handoff_text_rate = metrics.pop("handoff_rate", None)
    if metrics.get("key_fact_total"):
        metrics["key_fact_source"] = "kg (at the sample's time) + annotations"
    for row in rows:
        refs = row["references"]
        row["bleu4_single_ref"] = lf_bleu4(row["prediction"], refs[:1])
        if len(refs) > 1:
            row["rougeL_multi_ref"] = max(lf_rouge(row["prediction"], r)["rougeL"] for r in refs)
    metrics["bleu4_single_ref"] = sum(r["bleu4_single_ref"] for r in rows) / n
    for key in ("rouge1", "rouge2", "rougeL"):
        metrics[f"{key}_single_ref"] = metrics[key]  # the eval's ROUGE scores the first reference
    if metrics.get("multi_reference_turns"):
        metrics["bleu4_multi_ref"] = metrics["bleu4"]  # NLTK multi-reference BLEU over every reference
        metrics["rougeL_multi_ref"] = sum(r.get("rougeL_multi_ref", r["rougeL"]) for r in rows) / n
    paths = Counter(str(r.get("path")) for r in records)
    replaced = Counter(str(r["replaced"]) for r in records if r.get("replaced"))
    verification = Counter(attempt.split(":", 1)[0] for r in records for attempt in (r.get("verification") or []))
    invented = [len(r.get("invented") or []) for r in records]
    catalogue = [len(r.get("invented_catalogue") or []) for r in records]
    kinds = Counter(item.split(" ", 1)[0] for r in records for item in (r.get("invented") or []))
    metrics.update({
        "path_mix": _share(paths, n), "path_counts": dict(paths),
        "reasons": dict(Counter(str(r.get("reason")) for r in records).most_common()),
        "replacements": dict(replaced), "replacement_rate": sum(replaced.values()) / n,
        "verification_failures": dict(verification),
        "verification_failure_rate": sum(1 for r in records if r.get("verification")) / n,
        "handoff_rate": paths.get("handoff", 0) / n, "handoff_text_rate": handoff_text_rate,
        "fallback_rate": sum(1 for r in records if r.get("fallback")) / n,
        "invented_fact_rate": sum(1 for k in invented if k) / n,
        "invented_facts_per_reply": sum(invented) / n, "invented_fact_total": sum(invented),
        "invented_fact_kinds": dict(kinds),
        "invented_catalogue_rate": sum(1 for k in catalogue if k) / n,
        "evidence_sources": dict(Counter(str(r.get("evidence")) for r in records)),
    })
    return metrics
