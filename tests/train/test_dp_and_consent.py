"""`kefu train` refuses data without a consent record unless overridden (audited), and trains with DP-SGD."""

import json

from typer.testing import CliRunner

from kefu.artifacts.run import TrainRun
from kefu.cli import app
from kefu.safety import audit
from kefu.testing import make_dialogues, write_jsonl


def _args(data, out, model):
    return ["train", "--data", str(data), "--out", str(out), "--model", str(model), "--max-steps", "3",
            "--batch-size", "8", "--max-len", "128", "--precision", "fp32", "--no-progress"]


def test_training_needs_consent_or_an_audited_override(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d" / "train.jsonl", make_dialogues(16))
    result = CliRunner().invoke(app, _args(data, tmp_path / "run", tiny_model_dir))
    assert result.exit_code != 0 and "consent" in str(result.exception)
    assert not (tmp_path / "run" / "adapter").exists()
    result = CliRunner().invoke(app, _args(data, tmp_path / "run", tiny_model_dir)
                                + ["--consent-override", "vendor contract signed, record pending"])
    assert result.exit_code == 0, result.output
    overrides = [e for e in audit.entries() if e["action"] == "consent.override"]
    assert overrides and "record pending" in json.dumps(overrides[-1], ensure_ascii=False)


def test_dp_training_reports_epsilon_within_budget(tiny_model_dir, tmp_path):
    from kefu.safety import consent

    data = write_jsonl(tmp_path / "d" / "train.jsonl", make_dialogues(64, seed=4))
    consent.register(data, source="tests", legal_basis="consent", consent=True)
    result = CliRunner().invoke(app, _args(data, tmp_path / "run", tiny_model_dir)
                                + ["--dp", "--epsilon", "4", "--delta", "1e-4", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    run = TrainRun(tmp_path / "run").require_finished()  # the same run folder `kefu train` writes
    report = run.report()
    assert report["dp"] and 0 < report["epsilon_spent"] <= 4.0 and report["noise_multiplier"] > 0
    assert run.base_model() == str(tiny_model_dir) and run.record()["dp"]["epsilon"] == 4
    assert [m["step"] for m in run.metrics()] == list(range(1, report["steps"] + 1))
    assert run.metrics()[-1]["epsilon_spent"] == report["epsilon_spent"]
    entry = [e for e in audit.entries() if e["action"] == "train"][-1]
    assert entry["details"]["epsilon_spent"] == report["epsilon_spent"]


def test_prepared_splits_inherit_their_sources_consent(tiny_model_dir, tmp_path):
    from kefu.safety import consent

    raw = write_jsonl(tmp_path / "raw.jsonl", make_dialogues(40, seed=5))
    consent.register(raw, source="shop-export-2026-11", legal_basis="consent", consent=True, privacy_notice=True)
    result = CliRunner().invoke(app, ["prepare", str(raw), "--out", str(tmp_path / "prep"), "-q", "--no-augment"])
    assert result.exit_code == 0, result.output
    record = consent.lookup(tmp_path / "prep" / "train.jsonl")
    assert record and record["consent"] and record["source"] == "derived:shop-export-2026-11"
    result = CliRunner().invoke(app, _args(tmp_path / "prep", tmp_path / "run", tiny_model_dir))
    assert result.exit_code == 0, result.output
