"""Raw-data and model-changing CLI stages refuse keys without the permission, and audit who acted."""

from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit
from kefu.safety.keys import KeyStore, acting_as, local_principal

runner = CliRunner()


def test_mask_and_prepare_need_data_permissions(tmp_path, monkeypatch):
    # fresh install: the OS user may act (bootstrap rule)
    assert runner.invoke(app, ["mask"], input="电话13812345678\n").exit_code == 0
    store = KeyStore.open()
    agent_key, _ = store.create("agent", "front-desk")  # fresh install: the OS user may create the first key
    with acting_as(local_principal()):  # from now on managing keys needs keys:admin
        engineer_key, engineer = store.create("data-engineer", "etl")

    monkeypatch.delenv("KEFU_KEY", raising=False)
    result = runner.invoke(app, ["mask"], input="x\n")
    assert result.exit_code != 0 and "KEFU_KEY" in str(result.exception)

    monkeypatch.setenv("KEFU_KEY", agent_key)
    result = runner.invoke(app, ["mask"], input="x\n")
    assert result.exit_code != 0 and "data:read" in str(result.exception)
    src = tmp_path / "in.jsonl"
    src.write_text('{"messages":[{"role":"user","content":"在吗"},{"role":"assistant","content":"在的亲"}]}\n',
                   encoding="utf-8")
    result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code != 0 and "data:write" in str(result.exception)

    monkeypatch.setenv("KEFU_KEY", engineer_key)
    result = runner.invoke(app, ["mask"], input="电话13812345678\n")
    assert result.exit_code == 0 and "[手机号]" in result.output
    result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    prepare_entries = [e for e in audit.entries() if e["action"] == "prepare"]
    assert prepare_entries and prepare_entries[-1]["actor"] == engineer.actor


def test_model_commands_need_deploy_permission(monkeypatch):
    trainer_key, _ = KeyStore.open().create("trainer", "ml")
    monkeypatch.setenv("KEFU_KEY", trainer_key)
    result = runner.invoke(app, ["models", "rollback"])
    assert result.exit_code != 0 and "model:deploy" in str(result.exception)
