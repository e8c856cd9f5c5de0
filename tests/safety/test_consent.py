import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit, consent
from kefu.types import KefuError


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text('{"messages": []}\n', encoding="utf-8")
    return path


def test_register_then_require(data):
    with pytest.raises(KefuError, match="no consent/provenance record"):
        consent.require_consent([data])
    record = consent.register(data, source="taobao-export", legal_basis="contract", consent=False,
                              privacy_notice=True)
    assert record["digest"] == audit.sha256_file(data)
    assert consent.require_consent([data])[0]["id"] == record["id"]
    assert [e["action"] for e in audit.entries()] == ["consent.register", "consent.check"]


def test_consent_basis_needs_consent_and_edits_invalidate(data):
    consent.register(data, source="s", legal_basis="consent", consent=False)
    with pytest.raises(KefuError, match="consent was not given"):
        consent.require_consent([data])
    consent.register(data, source="s", legal_basis="consent", consent=True)
    consent.require_consent([data])
    data.write_text('{"messages": [1]}\n', encoding="utf-8")
    with pytest.raises(KefuError, match="changed since it was registered"):
        consent.require_consent([data])


def test_override_is_audited_with_reason(data):
    assert consent.require_consent([data], override_reason="public benchmark, no personal data") == [None]
    entry = audit.search(action="consent.override")[0]
    assert entry["details"]["reason"] == "public benchmark, no personal data"
    assert str(data) in entry["details"]["problems"]
    with pytest.raises(KefuError):
        consent.require_consent([data], override_reason="  ")


def test_bad_basis_and_missing_source(data, tmp_path):
    with pytest.raises(KefuError, match="legal-basis"):
        consent.register(data, source="s", legal_basis="because", consent=True)
    with pytest.raises(KefuError, match="source"):
        consent.register(data, source=" ", legal_basis="contract", consent=True)
    with pytest.raises(KefuError, match="no such file"):
        consent.register(tmp_path / "missing", source="s", legal_basis="contract", consent=True)


def test_folder_digest_and_inherit(tmp_path, data):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n", encoding="utf-8")
    digest = consent.dataset_digest(folder)
    (folder / "b.csv").write_text("y\n", encoding="utf-8")
    assert consent.dataset_digest(folder) != digest
    consent.register(folder, source="crm", legal_basis="consent", consent=True, privacy_notice=True)
    consent.register(data, source="im", legal_basis="contract", consent=False, privacy_notice=False)
    derived = tmp_path / "clean.jsonl"
    derived.write_text("{}\n", encoding="utf-8")
    record = consent.inherit(derived, [folder, data])
    assert record["legal_basis"] == "consent" and record["consent"] and not record["privacy_notice"]
    assert record["source"] == "derived:crm,im"
    consent.require_consent([derived])


def test_cli_register_list_check(data):
    runner = CliRunner()
    refused = runner.invoke(app, ["consent", "check", str(data)])
    assert refused.exit_code != 0 and "refused" in str(refused.exception)
    registered = runner.invoke(app, ["consent", "register", str(data), "--source", "im", "--legal-basis", "consent",
                                     "--consent", "--privacy-notice"])
    assert registered.exit_code == 0, registered.output
    assert runner.invoke(app, ["consent", "check", str(data)]).exit_code == 0
    assert "im" in runner.invoke(app, ["consent", "list"]).output
