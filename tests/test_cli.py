from typer.testing import CliRunner

from kefu.cli import app
from kefu.config import load_config
from kefu.types import KefuError
import pytest


def test_config_show_prints_every_stage():
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    for stage in ("prepare", "train", "eval", "kg", "serve", "safety", "loop"):
        assert f"{stage}:" in result.output


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "kefu.yaml"
    path.write_text("prepare:\n  seed: 7\n", encoding="utf-8")
    assert load_config(path).prepare.seed == 7
    assert load_config(path, {"prepare.seed": 9}).prepare.seed == 9


def test_config_errors_name_file_and_field(tmp_path):
    path = tmp_path / "kefu.yaml"
    path.write_text("prepare:\n  sed: 7\n", encoding="utf-8")
    with pytest.raises(KefuError, match=r"kefu.yaml.*prepare.sed"):
        load_config(path)
    with pytest.raises(KefuError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_main_exit_codes(monkeypatch, capsys):
    """User errors exit 2 with one line; a command's own non-zero exit code survives main()."""
    import sys

    from kefu import cli

    monkeypatch.setattr(sys, "argv", ["kefu", "models", "rollback"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "nothing is promoted" in capsys.readouterr().err

    import typer

    # a command added for this test only: the app's command list is restored afterwards, so it leaks nowhere
    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))

    @cli.app.command("_exit3", hidden=True)
    def _exit3():
        raise typer.Exit(3)

    monkeypatch.setattr(sys, "argv", ["kefu", "_exit3"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 3


def test_no_test_command_leaks_into_the_shared_app():
    """Runs after test_main_exit_codes (file order): the shared Typer app holds only kefu's own commands."""
    from kefu import cli

    assert all(not (c.name or "").startswith("_") for c in cli.app.registered_commands)
