"""Feedback analysis: which intents, entities and failure types go wrong, why, and how that moves over time.

Every feedback record is classified into one failure type (or ``ok``):
- ``wrong_fact`` — a correction whose numbers (prices, days, quantities) differ from the model's answer;
- ``non_compliant`` — the answer breaks the advertising-law/content rules (``kefu.safety.compliance.check``);
- ``unresolved`` — a handoff outcome ``unresolved``/``abandoned``, or a low rating with no better explanation;
- ``handed_off`` — the conversation went to a human (outcome ``escalated``/``resolved`` by the human);
- ``corrected`` — a correction that changed wording but no fact.
Intents and entities come from the rule annotator over the conversation's last customer turn.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from kefu.data.annotate import RuleAnnotator
from kefu.eval.report import bar_chart
from kefu.loop.feedback import FeedbackRecord
from kefu.safety.compliance import check

FAILURE_TYPES = ("wrong_fact", "non_compliant", "unresolved", "handed_off", "corrected")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _last(conversation: list[dict[str, str]], role: str) -> str:
    return next((m.get("content", "") for m in reversed(conversation) if m.get("role") == role), "")


def _annotator():
    return RuleAnnotator()


def classify(record: FeedbackRecord, *, min_rating_ok: int = 4) -> str:
    """The failure type of one record, or ``ok``."""
    answer = _last(record.conversation, "assistant")
    if record.kind == "correction":
        if sorted(_NUMBER.findall(record.correction or "")) != sorted(_NUMBER.findall(answer)):
            return "wrong_fact"
        return "non_compliant" if answer and check(answer) else "corrected"
    if answer and check(answer):
        return "non_compliant"
    if record.kind == "handoff":
        return "unresolved" if record.outcome in ("unresolved", "abandoned") else "handed_off"
    if record.rating is not None:
        bad = record.rating == -1 or (record.rating > 1 and record.rating < min_rating_ok)
        return "unresolved" if bad else "ok"
    return "ok"


def analyze(records: Iterable[FeedbackRecord], *, min_rating_ok: int = 4, examples: int = 3) -> dict[str, Any]:
    """Counts by failure type, intent and entity; top (intent, failure) reasons with examples; a weekly trend."""
    annotator = _annotator()
    by_type: Counter = Counter()
    by_intent: dict[str, Counter] = defaultdict(Counter)
    by_entity: Counter = Counter()
    reasons: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    trend: dict[str, Counter] = defaultdict(Counter)
    total = 0
    for record in records:
        total += 1
        failure = classify(record, min_rating_ok=min_rating_ok)
        question = _last(record.conversation, "user")
        intent = annotator.intent(question) if question else "other"
        entities = {e.type for e in annotator.entities(question, 0)} if question else set()
        by_type[failure] += 1
        by_intent[intent][failure] += 1
        week = record.created_at.strftime("%G-W%V") if isinstance(record.created_at, datetime) else "unknown"
        trend[week][failure] += 1
        if failure == "ok":
            continue
        by_entity.update(entities)
        bucket = reasons[(intent, failure)]
        if len(bucket) < examples:
            bucket.append({"question": question, "answer": _last(record.conversation, "assistant"),
                           "correction": record.correction or "", "comment": record.comment or ""})
        else:
            bucket.append({})  # counted, not kept
    top = sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    failures = total - by_type.get("ok", 0)
    return {
        "records": total,
        "failures": failures,
        "failure_rate": failures / total if total else 0.0,
        "by_failure_type": {t: by_type.get(t, 0) for t in FAILURE_TYPES},
        "by_intent": {i: dict(c) for i, c in sorted(by_intent.items(), key=lambda kv: -sum(kv[1].values()))},
        "by_entity": dict(by_entity.most_common()),
        "top_reasons": [{"intent": i, "failure": f, "count": len(ex), "examples": [e for e in ex if e]}
                        for (i, f), ex in top[:10]],
        "trend": {week: dict(c) for week, c in sorted(trend.items())},
    }


def write_report(analysis: dict[str, Any], out: Path) -> Path:
    """``out/analysis.json`` and ``out/analysis.html`` (inline SVG charts, readable offline)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(analysis, ensure_ascii=False, indent=2), encoding="utf-8")
    types = analysis["by_failure_type"]
    intents = {i: sum(v for k, v in c.items() if k != "ok") for i, c in analysis["by_intent"].items()}
    weeks = analysis["trend"]
    rate = {w: (sum(v for k, v in c.items() if k != "ok") / max(sum(c.values()), 1)) for w, c in weeks.items()}
    rows = "".join(
        f"<tr><td>{html.escape(r['intent'])}</td><td>{html.escape(r['failure'])}</td><td>{r['count']}</td><td>"
        + "<br>".join(html.escape(f"问：{e['question']} ｜ 答：{e['answer']} ｜ 改：{e['correction']}")
                      for e in r["examples"]) + "</td></tr>" for r in analysis["top_reasons"])
    page = f"""<!doctype html><html lang="zh"><meta charset="utf-8"><title>kefu feedback analysis</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}</style>
<h1>Feedback analysis</h1>
<p>{analysis['records']} records, {analysis['failures']} failures ({analysis['failure_rate']:.1%}).</p>
{bar_chart(list(types), list(types.values()), "Failures by type")}
{bar_chart(list(intents), list(intents.values()), "Failures by intent")}
{bar_chart(list(rate), [100 * v for v in rate.values()], "Failure rate by week", unit="%")}
<h2>Top reasons</h2><table><tr><th>intent</th><th>failure</th><th>count</th><th>examples</th></tr>{rows}</table>
</html>"""
    path = out / "analysis.html"
    path.write_text(page, encoding="utf-8")
    return path
