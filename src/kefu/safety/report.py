"""``kefu compliance report``: the method's compliance checklist, each item with its evidence.

Items: privacy notice given; lawful basis for processing (and audited overrides); model outputs conform to the
advertising law (a scan of replies, plus the serve stage's ``compliance.*`` audit entries); no other customers' PII in
outputs; audit log intact; access control in place; differential privacy used in training (informational).
Status is ``pass``, ``warn``, ``fail`` or ``unknown`` (no evidence yet).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from kefu.artifacts.dialogues import dialogue_from_json
from kefu.safety import audit, compliance, consent
from kefu.safety.keys import KeyStore, ROLES
from kefu.types import KefuError


def _replies(path: Path) -> Iterator[str]:
    """Assistant texts from a file whose lines are prepared dialogues ({"messages": [...]}, read as
    :mod:`kefu.artifacts.dialogues` reads them), {"reply": ...} / {"output": ...} rows, or plain text replies; the
    kinds may mix, so a line is JSON when it starts with ``{``. Errors name the file and line."""
    if not path.is_file():
        raise KefuError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            if not line.startswith("{"):
                yield line
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KefuError(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
            if "messages" in data:
                dialogue = dialogue_from_json(data, f"{path}:{number}")
                yield from (turn.content for turn in dialogue.messages if turn.role == "assistant")
            elif "reply" in data:
                yield str(data["reply"])
            elif "output" in data:
                yield str(data["output"])


def build(replies: str | Path | None = None, *, rules: compliance.ComplianceRules | None = None,
          promotions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Collect the evidence and grade each checklist item."""
    items: list[dict[str, Any]] = []
    records = consent.records()
    # Latest record per content digest
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[record["digest"]] = record
    datasets = list(latest.values())
    overrides = audit.search(action="consent.override")
    checks = audit.search(action="consent.check")

    with_notice = sum(1 for r in datasets if r["privacy_notice"])
    items.append({
        "id": "privacy_notice", "title": "隐私告知 Privacy notice given to the people in the data",
        "status": "unknown" if not datasets else ("pass" if with_notice == len(datasets) else "fail"),
        "evidence": {"datasets": len(datasets), "with_privacy_notice": with_notice,
                     "without": [r["path"] for r in datasets if not r["privacy_notice"]]},
    })
    valid = [r for r in datasets if consent.problem(r, r["path"]) is None]
    li = [r["path"] for r in datasets if r["legal_basis"] == "legitimate-interest"]
    bases = Counter(r["legal_basis"] for r in datasets)
    status = "unknown" if not datasets else ("fail" if len(valid) < len(datasets) else
                                              "warn" if (overrides or li) else "pass")
    items.append({
        "id": "lawful_basis", "title": "合法授权 Lawful basis for processing (PIPL art. 13)",
        "status": status,
        "evidence": {"datasets": len(datasets), "valid": len(valid), "by_basis": dict(bases),
                     "legitimate_interest_needs_review": li, "consent_checks_passed": len(checks),
                     "overrides": [{"time": e["time"], "actor": e["actor"], "reason": e["details"].get("reason"),
                                    "object": e["object"]} for e in overrides]},
    })

    scanned = 0
    by_rule: Counter[str] = Counter()
    pii_hits = 0
    bad_examples: list[dict[str, Any]] = []
    if replies is not None:
        path = Path(replies)
        if not path.exists():
            raise KefuError(f"{path}: replies file not found")
        for text in _replies(path):
            scanned += 1
            hits = [h for h in compliance.check(text, rules=rules, promotions=promotions)]
            pii = compliance.scan_output(text, [])
            pii_hits += len(pii)
            for hit in hits:
                by_rule[hit.category] += 1
            if hits and len(bad_examples) < 5:
                bad_examples.append({"text": text[:120], "rules": [h.rule for h in hits],
                                     "articles": sorted({h.law_article for h in hits})})
    served = audit.search(action="compliance.rewrite")  # the serve stage records one per rewritten reply
    served_hits = sum(int(e.get("details", {}).get("violations", 0) or 0) for e in served)
    flagged = sum(by_rule.values())
    items.append({
        "id": "advertising_law", "title": "输出符合广告法 Model outputs conform to the advertising law",
        "status": "unknown" if not scanned and not served else ("pass" if flagged == 0 else "fail"),
        "evidence": {"replies_scanned": scanned, "violations_by_category": dict(by_rule),
                     "replies_with_violations_examples": bad_examples,
                     "serve_filter_entries": len(served), "serve_violations_rewritten": served_hits,
                     "rules": rules.source if rules else "defaults"},
    })
    items.append({
        "id": "pii_in_outputs", "title": "输出不含个人信息 No personal data in the scanned replies",
        "status": "unknown" if not scanned else ("pass" if pii_hits == 0 else "fail"),
        "evidence": {"replies_scanned": scanned, "pii_items": pii_hits},
    })
    result = audit.verify()
    items.append({
        "id": "audit_integrity", "title": "审计日志完整 Audit log intact (hash chain + head anchor)",
        "status": "pass" if result.ok and result.entries else ("unknown" if result.ok else "fail"),
        "evidence": {"entries": result.entries, "first_bad_line": result.first_bad, "reason": result.reason,
                     "head_digest": result.head},
    })
    if KeyStore.exists():
        keys = KeyStore.open().list(include_revoked=False)
        by_role = {role: sum(1 for k in keys if k["role"] == role) for role in ROLES}
        items.append({"id": "access_control", "title": "访问控制 API keys and roles in force", "status": "pass",
                      "evidence": {"active_keys": len(keys), "by_role": by_role,
                                   "denials": len(audit.search(action="access.denied"))}})
    else:
        items.append({"id": "access_control", "title": "访问控制 API keys and roles in force", "status": "warn",
                      "evidence": {"active_keys": 0, "note": "no key store yet: local CLI runs as the OS user "
                                                             "(bootstrap rule)"}})
    dp_runs = [e for e in audit.entries() if isinstance(e.get("details"), dict)
               and (e["details"].get("dp") or "epsilon_spent" in e["details"])]
    items.append({
        "id": "differential_privacy", "title": "差分隐私 Training with differential privacy (informational)",
        "status": "pass" if dp_runs else "unknown",
        "evidence": {"dp_runs": [{"time": e["time"], "object": e["object"],
                                  "epsilon_spent": e["details"].get("epsilon_spent"),
                                  "delta": e["details"].get("delta")} for e in dp_runs[-5:]]},
    })
    overall = ("fail" if any(i["status"] == "fail" for i in items) else
               "warn" if any(i["status"] in ("warn", "unknown") for i in items) else "pass")
    return {"generated_at": datetime.now(timezone.utc).isoformat(), "overall": overall, "items": items}


_ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "unknown": "❔ unknown"}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Compliance report", "", f"Generated {report['generated_at']} — overall: **{report['overall']}**", "",
             "| Item | Status |", "|---|---|"]
    lines += [f"| {item['title']} | {_ICON[item['status']]} |" for item in report["items"]]
    for item in report["items"]:
        lines += ["", f"## {item['title']}", "", f"Status: {_ICON[item['status']]}", "", "```json",
                  json.dumps(item["evidence"], ensure_ascii=False, indent=2), "```"]
    return "\n".join(lines) + "\n"
