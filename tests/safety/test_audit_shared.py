"""The audit chain on the shared PostgreSQL database: concurrent writers from several processes keep one unbroken
chain, ``verify`` checks it and catches tampering, and an acknowledged entry is there for a new process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit

WRITERS = 4
ENTRIES_EACH = 40


def _sql(url: str, statement: str) -> None:
    """Change the database behind kefu's back, as an attacker with database access would."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_four_processes_appending_at_once_keep_one_verified_chain(shared_state, tmp_path):
    go = tmp_path / "go"
    writer = textwrap.dedent(f"""
        import os, sys, time
        from kefu.safety import audit
        audit.verify()  # connect and migrate before the start line, so the appends really overlap
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        for i in range({ENTRIES_EACH}):
            audit.record("test.append", f"writer{{sys.argv[1]}}/{{i}}", details={{"writer": sys.argv[1], "i": i}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(n)], stderr=subprocess.PIPE, text=True)
             for n in range(WRITERS)]
    time.sleep(3)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    result = audit.verify()
    assert result.ok, result.reason
    assert result.entries == WRITERS * ENTRIES_EACH
    written = [e for e in audit.entries() if e["action"] == "test.append"]
    assert sorted(e["object"] for e in written) == sorted(f"writer{n}/{i}" for n in range(WRITERS)
                                                          for i in range(ENTRIES_EACH))
    # the writers really interleaved (not one after another), and each one's entries stay in its own order
    writers_in_order = [e["details"]["writer"] for e in written]
    assert sum(a != b for a, b in zip(writers_in_order, writers_in_order[1:])) > WRITERS - 1
    for n in range(WRITERS):
        assert [e["details"]["i"] for e in written if e["details"]["writer"] == str(n)] == list(range(ENTRIES_EACH))


def test_verify_catches_edits_deletions_truncation_and_foreign_rows(shared_state, postgres_url):
    for i in range(5):
        audit.record("test.append", f"o{i}")
    assert audit.verify().ok and audit.verify().entries == 5

    entry = list(audit.entries())[2]
    edited = json.dumps({**entry, "object": "tampered"}, ensure_ascii=False, sort_keys=True).replace("'", "''")
    original = json.dumps(entry, ensure_ascii=False, sort_keys=True).replace("'", "''")
    _sql(postgres_url, f"UPDATE audit_log SET entry = '{edited}' WHERE seq = 3")
    result = audit.verify()
    assert not result.ok and result.first_bad == 3 and "edited" in result.reason
    bad = CliRunner().invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "audit_log" in bad.output and "line 3" in bad.output
    _sql(postgres_url, f"UPDATE audit_log SET entry = '{original}' WHERE seq = 3")
    assert audit.verify().ok

    last = list(audit.entries())[-1]
    forged = {**last, "object": "forged", "prev": last["digest"]}
    forged.pop("digest")
    forged["digest"] = hashlib.sha256(json.dumps(forged, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    line = json.dumps(forged, ensure_ascii=False, sort_keys=True).replace("'", "''")
    _sql(postgres_url, f"INSERT INTO audit_log (seq, digest, entry) VALUES (6, '{forged['digest']}', '{line}')")
    result = audit.verify()  # a well-linked entry written straight into the table is not anchored by the head
    assert not result.ok and result.first_bad == 6 and "not anchored" in result.reason
    _sql(postgres_url, "DELETE FROM audit_log WHERE seq = 6")

    _sql(postgres_url, "DELETE FROM audit_log WHERE seq = 5")  # the tail: the chain itself still links
    result = audit.verify()
    assert not result.ok and "truncated" in result.reason
    _sql(postgres_url, "UPDATE audit_head SET count = 4, digest = (SELECT digest FROM audit_log WHERE seq = 4)")
    assert audit.verify().ok  # someone who rewrites the head too is only caught by a head digest kept elsewhere

    _sql(postgres_url, "DELETE FROM audit_log WHERE seq = 2")
    result = audit.verify()
    assert not result.ok and result.first_bad == 2


def test_an_acknowledged_entry_is_seen_by_a_new_process(shared_state):
    entry = audit.record("test.durable", "written-here", details={"n": 1})
    check = textwrap.dedent("""
        import json
        from kefu.safety import audit
        result = audit.verify()
        print(json.dumps({"ok": result.ok, "entries": result.entries, "head": result.head,
                          "digests": [e["digest"] for e in audit.entries()]}))
    """)
    out = json.loads(subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                                    timeout=120).stdout)
    assert out["ok"] and out["entries"] == 1 and out["head"] == entry["digest"] == out["digests"][0]
    assert audit.location().endswith("(table audit_log)")


def test_an_explicit_path_is_still_a_file_log(shared_state, tmp_path):
    log = tmp_path / "elsewhere.log"
    audit.record("test.file", "o", path=log)
    assert audit.verify(log).ok and audit.verify(log).entries == 1
    assert audit.verify().entries == 0  # nothing went to the shared chain
