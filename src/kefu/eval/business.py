"""Business metrics: does the reply state the right facts, route the customer right, resolve, stay compliant?

Key facts: a fact is ``{"type": money|days|date|status|number|text, "value": ..., "text": optional}``
(money in integer fen, days as an int, dates ISO ``YYYY-MM-DD``, status a word such as 已发货). A fact is *correct*
when the prediction states its value (any usual surface form: ``¥259``, ``259元``, ``259.00元`` for 25900 fen;
``7天``/``七天``; ``11月20日``/``2026-11-20``); *wrong* when the prediction states a different value of the same kind
(another amount of money, another number of days, another date, another order status) and not the right one. A wrong
number is a failure, as is a missing one. Facts come from ``--kg`` (``kefu.kg.retrieval.retrieve`` on the customer's
last message) or from the record's ``facts``.

Intent accuracy: when records carry ``predicted_intent`` (a router's or the model's label), its agreement with the
gold ``intent``. Otherwise, whether the prediction and the reference are about the same intent according to the
data stage's rule annotator (turns whose reference it labels ``other`` are left out);
``intent_source`` says which was measured.

Resolution-rate proxy (we cannot see whether the customer's problem was solved): a turn counts as resolved when
(a) the reference hands off to a person and the prediction hands off too (a correct handoff), or (b) the reference
does not hand off, the prediction does not hand off, it either states every key fact of the turn correctly or states
a concrete resolving action (refund, resend, change, lookup result, how-to step...), and it states no wrong fact.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Sequence

from kefu.data.annotate import RuleAnnotator
from kefu.kg.retrieval import retrieve
from kefu.kg.retrieval.answers import policy_fields
from kefu.safety.compliance import check as compliance_check
from kefu.text.claims import DATE, date_parts
from kefu.text.numbers import NUMBER, cn_number, money_mentions
from kefu.text.pii import find_pii
from kefu.text.status import STATUS_WORDS

# Dates are kefu.text.claims's DATE (the verifier's), plus one form only scoring reads: a month and day in Chinese
# numerals (三月五日, 十一月二十号; 日/号 required), which claims leaves alone (there a Chinese numeral counts only
# with a unit). A model's reply spelling a date that way is still scored against the fact.
_CN_DATE = re.compile(r"(?<![一二三四五六七八九十])(?P<m>[一二三四五六七八九十]{1,3})\s*月\s*"
                      r"(?P<d>[一二三四五六七八九十]{1,3})\s*[日号]")
_DAYS_RE = re.compile(rf"({NUMBER})\s*(?:个)?(?:天|日|工作日)")
_HANDOFF_RE = re.compile(r"转人工|转接|人工客服|专员|专人|升级(?:处理|给)|为您转|帮您转|转给|移交|主管")
_ACTION_RE = re.compile(
    r"(?:已|已经|马上|立即|这就|现在)(?:为您|帮您|给您)?(?:申请|处理|办理|修改|登记|安排|提交|备注|催促|补发|退款|"
    r"换货|取消|联系|反馈|核实|查询|查到|操作|开具|重新)|"
    r"(?:为您|帮您|给您)(?:申请|处理|办理|修改|登记|安排|提交|备注|催促|补发|退|换|取消|联系|反馈|核实|查询|开|补偿|"
    r"升级|优先)|"
    r"退款|补发|换货|退货|上门取件|寄回|重新发|开具|发票|物流(?:显示|信息)|预计.{0,8}(?:送达|到达|发货|到账)|"
    r"可以(?:申请|办理|退|换|修改|使用|领取|选择|直接)|支持.{0,8}(?:退|换|修)|请您?(?:点击|提交|申请|进入|在|提供|"
    r"稍等|耐心)|单号|运单|订单(?:状态|显示)|优惠|价格|尺码|建议")


def _date_spans(text: str) -> list[tuple[int | None, int, int, int, int]]:
    """(year or None, month, day, start, end) of each date in ``text``, in text order."""
    found = []
    for m in DATE.finditer(text):
        parts = date_parts(m)
        if parts is not None:
            found.append((*parts, m.start(), m.end()))
    for m in _CN_DATE.finditer(text):
        month, day = cn_number(m.group("m")), cn_number(m.group("d"))
        if month is not None and day is not None and 1 <= month <= 12 and 1 <= day <= 31:
            found.append((None, month, day, m.start(), m.end()))
    return sorted(found, key=lambda span: span[3])


def dates_stated(text: str) -> list[tuple[int | None, int, int]]:
    """Dates in ``text`` as ``(year or None, month, day)``."""
    return [(y, m, d) for y, m, d, _, _ in _date_spans(text)]


def days_stated(text: str) -> list[int]:
    """Numbers of days in ``text`` (``7天``, ``七天``, ``15个工作日``), date expressions excluded."""
    masked = text
    for *_, start, end in _date_spans(text):
        masked = masked[:start] + " " * (end - start) + masked[end:]
    out = []
    for m in _DAYS_RE.finditer(masked):
        value = cn_number(m.group(1))
        if value is not None:
            out.append(value)
    return out


def normalize_fact(fact: Any) -> dict | None:
    """A fact in our dict form, from a dict, an object with ``type``/``value`` attributes, or a plain string."""
    if isinstance(fact, str):
        return {"type": "text", "value": fact} if fact.strip() else None
    if isinstance(fact, (int, float)) and not isinstance(fact, bool):
        return {"type": "number", "value": fact}
    if isinstance(fact, dict):
        kind, value = fact.get("type") or fact.get("kind"), fact.get("value")
        text = fact.get("text")
    else:
        kind = getattr(fact, "type", None) or getattr(fact, "kind", None)
        value, text = getattr(fact, "value", None), getattr(fact, "text", None)
    if value is None and text is None:
        return None
    kind = str(kind or "text").lower()
    aliases = {"price": "money", "price_fen": "money", "amount": "money", "fen": "money", "return_days": "days",
               "window_days": "days", "duration_days": "days", "order_status": "status", "logistics_status": "status"}
    kind = aliases.get(kind, kind)
    if kind not in {"money", "days", "date", "status", "number", "text"}:
        kind = "text"
    return {"type": kind, "value": value if value is not None else text, **({"text": text} if text else {})}


def check_fact(prediction: str, fact: dict) -> str:
    """``"correct"``, ``"wrong"`` (a different value of the same kind is stated instead) or ``"missing"``."""
    kind, value = fact["type"], fact["value"]
    if kind == "money":
        stated = [fen for _, _, fen in money_mentions(prediction)]
        target = int(value)
        return "correct" if target in stated else ("wrong" if stated else "missing")
    if kind == "days":
        stated = days_stated(prediction)
        return "correct" if int(value) in stated else ("wrong" if stated else "missing")
    if kind == "date":
        match = re.match(r"(\d{4})-(\d{1,2})-(\d{1,2})", str(value))
        if not match:
            return "missing"
        y, m, d = (int(g) for g in match.groups())
        stated = dates_stated(prediction)
        ok = any(sm == m and sd == d and (sy is None or sy == y) for sy, sm, sd in stated)
        return "correct" if ok else ("wrong" if stated else "missing")
    if kind == "status":
        word = str(value)
        if word in prediction:
            return "correct"
        return "wrong" if any(s in prediction for s in STATUS_WORDS if s != word) else "missing"
    if kind == "number":
        digits = re.findall(r"\d+(?:\.\d+)?", prediction)
        return "correct" if str(value) in digits or str(value) in prediction else "missing"
    return "correct" if str(value) in prediction else "missing"


def is_handoff(text: str) -> bool:
    """Whether an agent reply hands the customer to a person."""
    return bool(_HANDOFF_RE.search(text or ""))


def has_resolving_action(text: str) -> bool:
    """Whether an agent reply states a concrete action or answer (see the module docstring)."""
    return bool(_ACTION_RE.search(text or ""))


def context_text(context: Any) -> str:
    """All text of a context given as messages (``[{"role","content"}]``) or a string."""
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    if isinstance(context, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in context)
    return str(context)


def last_user_message(context: Any) -> str:
    """The customer's most recent message in a context (the whole context when it is a plain string)."""
    if isinstance(context, list):
        for m in reversed(context):
            if isinstance(m, dict) and m.get("role") == "user":
                return str(m.get("content", ""))
        return ""
    return context_text(context)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def key_facts_from_kg(raw_facts: Sequence[Any]) -> list[dict]:
    """The checkable key facts among ``retrieve()``'s facts: the payable price (after promotions, fen), the return
    window (days), the order status. Other facts (descriptions, playbooks, FAQ text) are context, not key facts."""
    out: list[dict] = []
    for fact in raw_facts:
        if not isinstance(fact, dict):
            norm = normalize_fact(fact)
            if norm is not None and norm["type"] != "text":
                out.append(norm)
            continue
        kind, data = fact.get("type"), fact.get("data") or {}
        if kind == "price" and data.get("payable_fen") is not None:
            out.append({"type": "money", "value": int(data["payable_fen"]), "text": fact.get("text")})
        elif kind == "policy" and data.get("return_days") is not None:
            out.append({"type": "days", "value": int(data["return_days"]), "text": fact.get("text")})
        elif kind == "order" and data.get("status"):
            out.append({"type": "status", "value": str(data["status"]), "text": fact.get("text")})
        elif kind in ("money", "days", "date", "status"):
            norm = normalize_fact(fact)
            if norm is not None:
                out.append(norm)
    return out


def kg_facts(kg: Any, record: dict) -> list[dict]:
    """Key facts the knowledge graph holds for the customer's last message (``retrieve(kg, text, customer_id=,
    at=)``); ``at`` is the record's ``at``/``date`` (ISO 8601 with offset) when given, else now."""
    query = last_user_message(record.get("context"))
    if not query:
        return []
    kwargs: dict[str, Any] = {"customer_id": record.get("customer_id")}
    when = record.get("at") or record.get("date")
    if when:  # prices after promotions depend on when the customer asked
        try:
            moment = datetime.fromisoformat(str(when))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            kwargs["at"] = moment
    result = retrieve(kg, query, **kwargs)
    raw = result.get("facts") if isinstance(result, dict) else getattr(result, "facts", None)
    facts = key_facts_from_kg(raw or [])
    if not policy_fields(query):  # a return window is a key fact of a question about windows, not of every 退款
        facts = [f for f in facts if f["type"] != "days"]
    return facts


_PLACEHOLDER_RE = re.compile(r"\[[^\[\]\s]{1,12}\]")  # already masked: [手机号], JDDC's [电话x], [PHONE]


def _pii_echoed(pred: str, ctx: str) -> int:
    """How many PII items (``kefu.text.pii.find_pii``, the masker's own detector) ``pred`` states that the context
    does not. Masking placeholders (``[手机号]``, JDDC's ``[订单x]``) are not PII."""
    texts = [s.text for s in find_pii(pred)]
    return sum(1 for t in texts if t and t not in ctx and not _PLACEHOLDER_RE.fullmatch(t))


def _intent_annotator():
    """The data stage's rule intent classifier (``RuleAnnotator().intent``), ``None`` when its lexicons fail."""
    try:
        return RuleAnnotator().intent
    except Exception:  # noqa: BLE001 - another stage's lexicons failing to load must not stop scoring
        return None


def business_metrics(records: list[dict], kg: Any = None) -> tuple[dict, list[dict]]:
    """Aggregate business metrics and one dict of per-sample fields per record."""
    annotator = None
    rows: list[dict] = []
    fact_total = fact_correct = fact_samples = fact_wrong_samples = 0
    intent_pairs: list[tuple[str, str]] = []
    intent_source = None
    if any(r.get("predicted_intent") for r in records):
        intent_source = "prediction"
    else:
        annotator = _intent_annotator()
        intent_source = "annotator:reply-vs-reference" if annotator else None
    latencies = [float(r["latency_ms"]) for r in records if isinstance(r.get("latency_ms"), (int, float))]
    handoffs = ref_handoffs = resolved = compliance_samples = compliance_hits = pii_samples = 0
    for rec in records:
        pred, refs = rec["prediction"], rec["references"] if isinstance(rec["references"], list) else [rec["references"]]
        row: dict[str, Any] = {}
        facts = [f for f in (normalize_fact(x) for x in (rec.get("facts") or [])) if f is not None]
        if kg is not None:
            facts = facts + kg_facts(kg, rec)
        wrong = False
        if facts:
            verdicts = [check_fact(pred, f) for f in facts]
            n_ok = verdicts.count("correct")
            wrong = "wrong" in verdicts
            fact_total += len(facts)
            fact_correct += n_ok
            fact_samples += 1
            fact_wrong_samples += int(wrong)
            row["fact_accuracy"] = n_ok / len(facts)
            row["fact_verdicts"] = verdicts
        if intent_source == "prediction" and rec.get("predicted_intent") and rec.get("intent"):
            intent_pairs.append((str(rec["predicted_intent"]), str(rec["intent"])))
            row["intent_correct"] = intent_pairs[-1][0] == intent_pairs[-1][1]
        elif annotator is not None:
            try:
                got, want = annotator(pred), annotator(refs[0])
            except Exception:  # noqa: BLE001 - another stage's heuristic; a failure means "no label"
                got = want = None
            if got and want and want != "other":
                intent_pairs.append((str(got), str(want)))
                row["intent_correct"] = got == want
        pred_handoff, ref_handoff = is_handoff(pred), any(is_handoff(r) for r in refs)
        handoffs += pred_handoff
        ref_handoffs += ref_handoff
        if ref_handoff:
            ok = pred_handoff
        else:
            answered = bool(facts) and row.get("fact_accuracy") == 1.0
            ok = (not pred_handoff) and (answered or has_resolving_action(pred)) and not wrong
        resolved += ok
        row.update(handoff=pred_handoff, resolved=ok)
        hits = compliance_check(pred) or []
        row["compliance_hits"] = len(hits)
        compliance_hits += len(hits)
        compliance_samples += bool(hits)
        echoed = _pii_echoed(pred, context_text(rec.get("context")))
        row["pii_echoed"] = echoed
        pii_samples += bool(echoed)
        rows.append(row)
    n = len(records)
    out: dict[str, Any] = {
        "key_fact_accuracy": fact_correct / fact_total if fact_total else None,
        "key_fact_error_rate": fact_wrong_samples / fact_samples if fact_samples else None,
        "key_fact_samples": fact_samples, "key_fact_total": fact_total,
        "key_fact_source": ("kg+annotations" if kg is not None else "annotations") if fact_total else None,
        "intent_accuracy": (sum(a == b for a, b in intent_pairs) / len(intent_pairs)) if intent_pairs else None,
        "intent_source": intent_source if intent_pairs else None,
        "resolution_rate": resolved / n, "handoff_rate": handoffs / n, "reference_handoff_rate": ref_handoffs / n,
        "latency_mean_ms": (sum(latencies) / len(latencies)) if latencies else None,
        "latency_p50_ms": percentile(latencies, 50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 95) if latencies else None,
        "compliance_violation_rate": compliance_samples / n,
        "compliance_hits": compliance_hits,
        "pii_echo_rate": pii_samples / n,
        "pii_source": "kefu.text.pii.find_pii",
    }
    return out, rows
