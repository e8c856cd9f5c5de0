"""CLI commands of the safety stage; `register` adds them to the root `kefu` app.

``kefu keys create|list|revoke``, ``kefu audit verify|show``, ``kefu consent register|list|check``,
``kefu compliance check|report``. Commands that change state (keys create/revoke, consent register) call the API,
which authorises ``$KEFU_KEY`` (or the OS user on a fresh install) and audits in its name
(``kefu.safety.keys.authorize``); read-only commands check their permission here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kefu.config import load_config
from kefu.safety import audit, report
from kefu.safety import consent as consent_mod
from kefu.safety.compliance import ComplianceRules, rewrite
from kefu.safety.keys import KeyStore, authorize
from kefu.types import KefuError

keys_app = typer.Typer(no_args_is_help=True, help="API keys and roles (RBAC).")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
consent_app = typer.Typer(no_args_is_help=True, help="Consent and provenance of datasets.")
compliance_app = typer.Typer(no_args_is_help=True, help="Advertising-law and content compliance.")
out = Console(soft_wrap=True)


def _principal(permission: str):
    return authorize(permission)


# ---------------------------------------------------------------------------------------------------------- keys
@keys_app.command("create")
def keys_create(role: str = typer.Option(..., "--role", help="admin, data-engineer, trainer, agent, customer-app, "
                                                             "shop-backend, auditor"),
                name: str = typer.Option(..., "--name", help="Who or what uses the key."),
                customer: Optional[str] = typer.Option(None, "--customer",
                                                       help="Bind the key to one customer (a key inside their app).")):
    """Create a key; the plaintext is printed once and never stored."""
    key, created = KeyStore.open().create(role, name, customer_id=customer)  # needs keys:admin
    out.print(f"key id [bold]{created.key_id}[/] role {created.role} name {created.name}")
    out.print("store this key now, it is not shown again:")
    print(key)


@keys_app.command("list")
def keys_list(active: bool = typer.Option(False, "--active", help="Hide revoked keys.")):
    """List keys (ids, names, roles, dates; never secrets)."""
    principal = _principal("keys:admin")
    rows = KeyStore.open().list(include_revoked=not active) if KeyStore.exists() else []
    audit.record("keys.list", "keys", actor=principal.actor, details={"count": len(rows)})
    table = Table("key id", "name", "role", "created", "by", "revoked")
    for row in rows:
        table.add_row(row["key_id"], row["name"], row["role"], row["created_at"][:19], row["created_by"],
                      (row["revoked_at"] or "")[:19])
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id from `kefu keys list`.")):
    """Revoke a key at once."""
    KeyStore.open().revoke(key_id)  # needs keys:admin
    out.print(f"revoked {key_id}")


@keys_app.command("whoami")
def keys_whoami():
    """Who this shell acts as ($KEFU_KEY, or the OS user on a fresh install) and its permissions."""
    principal = authorize()
    out.print(f"{principal.actor} role {principal.role}: {', '.join(sorted(principal.permissions))}")


# --------------------------------------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify():
    """Check the hash chain and the head anchor; exit 1 naming the first bad line."""
    _principal("audit:read")
    result = audit.verify()
    if result.ok:
        out.print(f"audit log OK: {result.entries} entries, head {result.head or audit.GENESIS}")
        return
    where = f"line {result.first_bad}: " if result.first_bad else ""
    Console(stderr=True).print(f"[bold red]audit log BROKEN[/] {audit.location()}: {where}{result.reason}")
    sys.exit(1)


@audit_app.command("show")
def audit_show(actor: Optional[str] = typer.Option(None, "--actor", help="Substring of the actor."),
               action: Optional[str] = typer.Option(None, "--action", help="Action, or a prefix ending in '.'."),
               object: Optional[str] = typer.Option(None, "--object", help="Substring of the object."),
               since: Optional[str] = typer.Option(None, "--since", help="ISO date/time (UTC when no offset)."),
               until: Optional[str] = typer.Option(None, "--until", help="ISO date/time (UTC when no offset)."),
               limit: int = typer.Option(100, "--limit", help="Show the last N matches (0 = all)."),
               as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table.")):
    """Show audit entries, filtered."""
    _principal("audit:read")
    rows = audit.search(actor=actor, action=action, object=object, since=since, until=until)
    if limit > 0:
        rows = rows[-limit:]
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    table = Table("time", "actor", "action", "object", "details", title=f"{len(rows)} entries")
    for row in rows:
        table.add_row(row["time"][:19], row["actor"], row["action"], row["object"],
                      json.dumps(row.get("details") or {}, ensure_ascii=False)[:80])
    out.print(table)


# ------------------------------------------------------------------------------------------------------- consent
@consent_app.command("register")
def consent_register(path: Path = typer.Argument(..., help="Dataset file or folder."),
                     source: str = typer.Option(..., "--source", help="Where it came from."),
                     legal_basis: str = typer.Option(..., "--legal-basis",
                                                     help="consent | contract | legitimate-interest"),
                     consent: bool = typer.Option(..., "--consent/--no-consent", help="Did the people consent?"),
                     privacy_notice: bool = typer.Option(False, "--privacy-notice/--no-privacy-notice",
                                                         help="Were they given a privacy notice?"),
                     note: Optional[str] = typer.Option(None, "--note")):
    """Record a dataset's provenance and legal basis (audited)."""
    row = consent_mod.register(path, source=source, legal_basis=legal_basis, consent=consent,  # needs data:write
                               privacy_notice=privacy_notice, note=note)
    problem = consent_mod.problem(row, path)
    out.print(f"registered {row['path']} (record {row['id']}, sha256 {row['digest'][:12]}…)"
              + (f" — [yellow]will be refused for training: {problem}[/]" if problem else ""))


@consent_app.command("list")
def consent_list():
    """List dataset records."""
    _principal("data:read")
    table = Table("id", "path", "source", "basis", "consent", "notice", "by", "when")
    for r in consent_mod.records():
        table.add_row(str(r["id"]), r["path"], r["source"], r["legal_basis"], "yes" if r["consent"] else "no",
                      "yes" if r["privacy_notice"] else "no", r["registered_by"], r["registered_at"][:19])
    out.print(table)


@consent_app.command("check")
def consent_check(paths: list[Path] = typer.Argument(..., help="Datasets to check."),
                  override_reason: Optional[str] = typer.Option(None, "--override-reason",
                                                                help="Use anyway, for this (audited) reason.")):
    """What training does: refuse data without a valid record (exit 2), unless overridden."""
    principal = _principal("data:read")
    consent_mod.require_consent(paths, override_reason, actor=principal.actor)
    out.print("ok" + (" (override audited)" if override_reason else ""))


# ---------------------------------------------------------------------------------------------------- compliance
def _load_rules(rules: Optional[Path]):
    if rules is None:
        configured = load_config().safety.compliance_rules
        rules = Path(configured) if configured else None
    return ComplianceRules.load(rules)


def _load_promotions(path: Optional[Path]):
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KefuError(f"{path}: cannot read promotions JSON: {exc}") from exc
    if not isinstance(data, list):
        raise KefuError(f"{path}: expected a JSON list of promotions")
    return data


@compliance_app.command("check")
def compliance_check(text: Optional[str] = typer.Argument(None, help="Agent text (default: read stdin)."),
                     rules: Optional[Path] = typer.Option(None, "--rules", help="Shop rules YAML."),
                     promotions: Optional[Path] = typer.Option(None, "--promotions",
                                                               help="Active promotions JSON (promotions.json)."),
                     as_json: bool = typer.Option(False, "--json")):
    """Check agent text; print each violation, its law article and the rewrite. Exit 1 when any."""
    text = text if text is not None else sys.stdin.read()
    safe, hits = rewrite(text, rules=_load_rules(rules), promotions=_load_promotions(promotions))
    if as_json:
        print(json.dumps({"violations": [h.to_dict() for h in hits], "rewritten": safe}, ensure_ascii=False))
    else:
        table = Table("rule", "text", "law article", "suggestion", title=f"{len(hits)} violations")
        for hit in hits:
            table.add_row(hit.rule, hit.text, hit.law_article, hit.suggestion or "")
        out.print(table)
        out.print(f"rewritten: {safe}")
    if hits:
        sys.exit(1)


@compliance_app.command("report")
def compliance_report(replies: Optional[Path] = typer.Option(None, "--replies",
                                                             help="Replies to scan (JSONL dialogues or text lines)."),
                      rules: Optional[Path] = typer.Option(None, "--rules", help="Shop rules YAML."),
                      promotions: Optional[Path] = typer.Option(None, "--promotions", help="promotions.json"),
                      fmt: str = typer.Option("md", "--format", help="md or json"),
                      output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here, not stdout.")):
    """The compliance checklist with evidence (privacy notice, lawful basis, advertising law, PII, audit, keys, DP)."""
    principal = _principal("audit:read")
    if fmt not in ("md", "json"):
        raise KefuError(f"--format must be md or json (got {fmt!r})")
    built = report.build(replies, rules=_load_rules(rules), promotions=_load_promotions(promotions))
    text = report.to_markdown(built) if fmt == "md" else json.dumps(built, ensure_ascii=False, indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output} (overall: {built['overall']})")
    else:
        print(text, end="")
    audit.record("compliance.report", str(output or "stdout"), actor=principal.actor,
                 details={"overall": built["overall"], "statuses": {i["id"]: i["status"] for i in built["items"]}})


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.add_typer(consent_app, name="consent")
    app.add_typer(compliance_app, name="compliance")
