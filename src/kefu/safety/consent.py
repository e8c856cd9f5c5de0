"""Consent and provenance of datasets: where each came from, on what legal basis it may be processed, who said so.

A record is keyed by the dataset's content digest (sha256 of the file, or of its files for a folder), so a moved file
keeps its record and an edited one loses it. ``require_consent`` is what training calls: data without a valid record
is refused unless an override reason is given, and that override is written to the audit log.

Legal bases follow 《个人信息保护法》第十三条: ``consent`` (第（一）项, needs the consent flag), ``contract``
(第（二）项, necessary to perform a contract with the person, e.g. answering their order). ``legitimate-interest`` is a
GDPR basis with no PIPL counterpart; it is accepted (shops also serve EU customers) but flagged by the compliance
report for legal review.

Records live in table ``datasets`` of ``kefu.state.database_url("consent")``: ``$KEFU_HOME/consent.db`` by default,
the shared PostgreSQL database with the postgres backend.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.engine import Engine

from kefu import state
from kefu.safety import audit
from kefu.safety.keys import acting_as, authorize, authorized, require
from kefu.state import database
from kefu.types import KefuError

LEGAL_BASES: tuple[str, ...] = ("consent", "contract", "legitimate-interest")
PIPL_BASES = {"consent": "《个人信息保护法》第十三条第一款第（一）项",
              "contract": "《个人信息保护法》第十三条第一款第（二）项",
              "legitimate-interest": "GDPR Art. 6(1)(f) — no PIPL counterpart, review needed"}

_metadata = MetaData()
_datasets = Table(
    "datasets", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String, nullable=False, index=True),
    Column("digest", String, nullable=False, index=True),
    Column("source", String, nullable=False),
    Column("legal_basis", String, nullable=False),
    Column("consent", Boolean, nullable=False),
    Column("privacy_notice", Boolean, nullable=False),
    Column("registered_by", String, nullable=False),
    Column("registered_at", String, nullable=False),
    Column("note", String, nullable=True),
    Column("derived_from", String, nullable=True),  # JSON list of record ids
)


def _engine() -> Engine:
    """The consent records' database in force (``kefu.state.database_url("consent")``), tables ensured."""
    return database.engine(state.database_url("consent"), _metadata)


def dataset_digest(path: str | Path) -> str:
    """sha256 of a file; for a folder, sha256 over its files' relative paths and digests (sorted)."""
    path = Path(path)
    if path.is_file():
        return audit.sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{file.relative_to(path).as_posix()}\0{audit.sha256_file(file)}\n".encode("utf-8"))
        return h.hexdigest()
    raise KefuError(f"{path}: no such file or folder")


def _validate(legal_basis: str, consent: bool) -> None:
    if legal_basis not in LEGAL_BASES:
        raise KefuError(f"--legal-basis must be one of {', '.join(LEGAL_BASES)} (got {legal_basis!r})")
    # consent basis without consent may be recorded (it documents the situation); require_consent refuses it.


@authorized("data:write")
def register(path: str | Path, *, source: str, legal_basis: str, consent: bool, privacy_notice: bool = False,
             note: str | None = None, actor: str | None = None, derived_from: list[int] | None = None
             ) -> dict[str, Any]:
    """Record a dataset's provenance and legal basis; audited as ``consent.register``. Returns the record.

    Needs ``data:write`` (``keys.authorize``): the record is what lets data be trained on."""
    return _register(path, source=source, legal_basis=legal_basis, consent=consent, privacy_notice=privacy_notice,
                     note=note, actor=actor, derived_from=derived_from)


def _register(path: str | Path, *, source: str, legal_basis: str, consent: bool, privacy_notice: bool,
              note: str | None, actor: str | None, derived_from: list[int] | None) -> dict[str, Any]:
    _validate(legal_basis, consent)
    if not source or not source.strip():
        raise KefuError("--source is required: say where the data came from (e.g. 'taobao-export-2026-10')")
    path = Path(path)
    digest = dataset_digest(path)
    actor = actor or audit.default_actor()
    row = {"path": str(path.resolve()), "digest": digest, "source": source.strip(), "legal_basis": legal_basis,
           "consent": bool(consent), "privacy_notice": bool(privacy_notice), "registered_by": actor,
           "registered_at": datetime.now(timezone.utc).isoformat(), "note": note,
           "derived_from": json.dumps(derived_from) if derived_from else None}
    with _engine().begin() as conn:
        row["id"] = conn.execute(insert(_datasets).values(**row)).inserted_primary_key[0]
    audit.record("consent.register", row["path"], actor=actor, digest=digest,
                 details={"source": row["source"], "legal_basis": legal_basis, "consent": row["consent"],
                          "privacy_notice": row["privacy_notice"], "record": row["id"]})
    return row


def records() -> list[dict[str, Any]]:
    """Every registration, oldest first."""
    with _engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(_datasets).order_by(_datasets.c.id)).all()]


def lookup(path: str | Path, digest: str | None = None) -> dict[str, Any] | None:
    """The latest record for this content (by digest), else None."""
    digest = digest or dataset_digest(path)
    with _engine().connect() as conn:
        row = conn.execute(select(_datasets).where(_datasets.c.digest == digest)
                           .order_by(_datasets.c.id.desc())).first()
    return dict(row._mapping) if row else None


def problem(record: dict[str, Any] | None, path: str | Path) -> str | None:
    """Why a dataset may not be used for training, or None when it may."""
    if record is None:
        with _engine().connect() as conn:
            stale = conn.execute(select(_datasets.c.id).where(_datasets.c.path == str(Path(path).resolve()))).first()
        return ("changed since it was registered (content digest differs); register it again" if stale
                else "no consent/provenance record (kefu consent register)")
    if record["legal_basis"] not in LEGAL_BASES:
        return f"unknown legal basis {record['legal_basis']!r}"
    if record["legal_basis"] == "consent" and not record["consent"]:
        return "legal basis is consent but consent was not given"
    return None


def require_consent(paths: Iterable[str | Path], override_reason: str | None = None, *,
                    actor: str | None = None) -> list[dict[str, Any] | None]:
    """Refuse (KefuError) training data without a valid record, unless ``override_reason`` is given — then the
    override, its reason and the problems are audited as ``consent.override``. Returns the records (None where
    overridden). A passing check is audited as ``consent.check``."""
    paths = [Path(p) for p in paths]
    found: list[dict[str, Any] | None] = []
    problems: dict[str, str] = {}
    digests: dict[str, str] = {}
    for path in paths:
        digest = dataset_digest(path)
        digests[str(path)] = digest
        record = lookup(path, digest)
        reason = problem(record, path)
        if reason:
            problems[str(path)] = reason
            record = None
        found.append(record)
    actor = actor or audit.default_actor()
    if problems:
        if override_reason and override_reason.strip():
            audit.record("consent.override", ",".join(problems), actor=actor,
                         details={"reason": override_reason.strip(), "problems": problems, "digests": digests})
            return found
        listed = "; ".join(f"{p}: {why}" for p, why in problems.items())
        raise KefuError(f"training data refused — {listed}. Register it (kefu consent register PATH --source S "
                        "--legal-basis consent|contract|legitimate-interest --consent) or pass an override reason "
                        "(audited)")
    audit.record("consent.check", ",".join(str(p) for p in paths), actor=actor,
                 details={"records": [r["id"] for r in found if r], "digests": digests})
    return found


def inherit(output: str | Path, sources: Iterable[str | Path], *, actor: str | None = None) -> dict[str, Any]:
    """Register a derived dataset (e.g. the prepare stage's cleaned JSONL) with the most restrictive terms of its
    sources: consent only if all consented, privacy notice only if all had one. Sources must pass the check.

    Needs ``data:write`` or ``model:train``: the stages that derive datasets (prepare; retraining's mixed data) call
    it; it can only pass on terms the sources already have."""
    principal = authorize()
    if not (principal.can("data:write") or principal.can("model:train")):
        require(principal, "data:write")
    with acting_as(principal):
        return _inherit(output, sources, actor=actor)


def _inherit(output: str | Path, sources: Iterable[str | Path], *, actor: str | None) -> dict[str, Any]:
    records_ = require_consent(list(sources), actor=actor)
    bases = {r["legal_basis"] for r in records_ if r}
    basis = next(b for b in LEGAL_BASES if b in bases)  # consent is the narrowest: it carries its limits over
    return _register(output, source="derived:" + ",".join(sorted({r["source"] for r in records_ if r})),
                    legal_basis=basis,
                    consent=all(r["consent"] for r in records_ if r and r["legal_basis"] == "consent"),
                    privacy_notice=all(r["privacy_notice"] for r in records_ if r), actor=actor,
                    derived_from=[r["id"] for r in records_ if r], note="derived")


def carry(sources: Iterable[str | Path], outputs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Give each existing file of ``outputs`` its ``sources``' consent/provenance record (``inherit``) when every
    source has a valid one; otherwise nothing (training then asks for a record, or an audited override). Returns the
    new records. The prepare stage and retraining call it on what they write, so their callers need not."""
    sources = [Path(p) for p in sources]
    if not sources or not all(problem(lookup(p), p) is None for p in sources):
        return []
    return [inherit(out, sources) for out in map(Path, outputs) if out.is_file()]
