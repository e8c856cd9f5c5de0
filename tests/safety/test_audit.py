import json

import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit
from kefu.types import KefuError


def _lines():
    return audit.audit_path().read_text(encoding="utf-8").splitlines()


def _write(lines):
    audit.audit_path().write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_chain_verifies_and_detects_edit_insert_delete(kefu_home):
    for i in range(4):
        audit.record("prepare", f"obj{i}", details={"i": i})
    path = audit.audit_path()
    assert audit.verify().ok and audit.verify().entries == 4
    lines = path.read_text(encoding="utf-8").splitlines()

    edited = json.loads(lines[1]); edited["object"] = "tampered"
    path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2

    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2

    path.write_text("\n".join([lines[0], lines[0], *lines[1:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2


def test_head_anchor_detects_truncation_and_unanchored_appends():
    for i in range(3):
        audit.record("x", f"o{i}")
    head = audit.read_head()
    assert head["count"] == 3 and head["digest"] == json.loads(_lines()[-1])["digest"]
    assert audit.verify().head == head["digest"]
    lines = _lines()

    _write(lines[:2])  # chain still valid, tail gone
    result = audit.verify()
    assert not result.ok and "truncated" in result.reason and result.first_bad == 3

    # A forged but well-chained entry appended by hand is not anchored.
    forged = {"time": "2026-01-01T00:00:00+00:00", "actor": "evil", "action": "x", "object": "o3",
              "data_digest": None, "details": {}, "prev": json.loads(lines[-1])["digest"]}
    forged["digest"] = audit._digest(forged)
    _write([*lines, json.dumps(forged, ensure_ascii=False, sort_keys=True)])
    result = audit.verify()
    assert not result.ok and result.first_bad == 4 and "not anchored" in result.reason

    _write(lines)
    audit.head_path().unlink()
    assert "missing" in audit.verify().reason


def test_cli_verify_exit_codes_name_the_line():
    runner = CliRunner()
    for i in range(3):
        audit.record("x", f"o{i}")
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "3 entries" in ok.output
    lines = _lines()
    edited = json.loads(lines[2]); edited["details"] = {"evil": True}
    _write([*lines[:2], json.dumps(edited)])
    bad = runner.invoke(app, ["audit", "verify"])
    # the verify command itself audits nothing, so the file is unchanged: line 3 is the edited one
    assert bad.exit_code == 1 and "line 3" in bad.output and "edited" in bad.output


def test_search_and_show_filters():
    audit.record("keys.create", "k1", actor="alice")
    audit.record("keys.revoke", "k1", actor="bob")
    audit.record("prepare", "shop/data.jsonl", actor="alice")
    assert [e["action"] for e in audit.search(actor="alice")] == ["keys.create", "prepare"]
    assert len(audit.search(action="keys.")) == 2 and len(audit.search(action="keys")) == 0
    assert [e["object"] for e in audit.search(object="shop")] == ["shop/data.jsonl"]
    assert audit.search(since="2999-01-01") == [] and len(audit.search(until="2999-01-01T00:00:00+08:00")) == 3
    with pytest.raises(KefuError, match="--since"):
        audit.search(since="yesterday")
    result = CliRunner().invoke(app, ["audit", "show", "--actor", "bob", "--json"])
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [e["action"] for e in shown] == ["keys.revoke"]
    table = CliRunner().invoke(app, ["audit", "show", "--action", "prepare"])
    assert table.exit_code == 0 and "1 entries" in table.output


def test_strange_inputs_never_break_the_chain():
    audit.record("x", "bad\ud800surrogate", details={"set": {1}, "bytes": b"\xff"})
    audit.record("x", "中文对象", details={"nested": {"list": [1, "二"]}})
    assert audit.verify().ok and audit.verify().entries == 2
    assert [e["object"] for e in audit.entries()][1] == "中文对象"
