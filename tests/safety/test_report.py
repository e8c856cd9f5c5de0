import json

from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit, consent, report


def test_report_grades_items_with_evidence(tmp_path):
    empty = report.build()
    assert {i["id"]: i["status"] for i in empty["items"]}["privacy_notice"] == "unknown"
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    consent.register(data, source="im", legal_basis="consent", consent=True, privacy_notice=True)
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps({"messages": [{"role": "user", "content": "最好的是哪款"},
                                                {"role": "assistant", "content": "这款最好，电话13912345678"}]},
                                  ensure_ascii=False) + "\n您好，这款有货\n", encoding="utf-8")
    audit.record("train", "run1", details={"dp": True, "epsilon_spent": 7.9, "delta": 1e-5})
    built = report.build(replies)
    status = {i["id"]: i for i in built["items"]}
    assert status["privacy_notice"]["status"] == "pass" and status["lawful_basis"]["status"] == "pass"
    assert status["advertising_law"]["status"] == "fail"
    assert status["advertising_law"]["evidence"]["replies_scanned"] == 2  # the user's 最好 is not scanned
    assert status["pii_in_outputs"]["evidence"]["pii_items"] == 1
    assert status["audit_integrity"]["status"] == "pass"
    assert status["differential_privacy"]["evidence"]["dp_runs"][0]["epsilon_spent"] == 7.9
    assert built["overall"] == "fail"
    md = report.to_markdown(built)
    assert "隐私告知" in md and "合法授权" in md and "广告法" in md


def test_override_and_legitimate_interest_warn(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    consent.register(data, source="im", legal_basis="legitimate-interest", consent=False, privacy_notice=True)
    consent.require_consent([tmp_path / "d.jsonl"])
    other = tmp_path / "e.jsonl"
    other.write_text("[]\n", encoding="utf-8")
    consent.require_consent([other], override_reason="synthetic data")
    item = {i["id"]: i for i in report.build()["items"]}["lawful_basis"]
    assert item["status"] == "warn" and item["evidence"]["overrides"][0]["reason"] == "synthetic data"
    assert item["evidence"]["legitimate_interest_needs_review"]


def test_cli_report_json(tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["compliance", "report", "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [i["id"] for i in data["items"]][:3] == ["privacy_notice", "lawful_basis", "advertising_law"]
    assert audit.search(action="compliance.report")
