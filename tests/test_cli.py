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


# ---------------------------------------------------------------------------------------------------------------
# usage errors through the real entry points (the `kefu` script, `python -m kefu.cli`): usage line, problem, exit 2


def _kefu(*args: str, module: bool = False):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "kefu"
    cmd = [sys.executable, "-m", "kefu.cli"] if module or not script.exists() else [str(script)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, usage, problem", [
    # the case: consent register without --consent/--no-consent
    (["consent", "register", "{file}", "--source", "S", "--legal-basis", "consent"],
     "Usage: kefu consent register", "Missing option '--consent'"),
    (["prepare", "--out", "{tmp}/out"], "Usage: kefu prepare", "Missing argument"),  # missing argument
    (["prepare", "{file}", "--out", "{tmp}/out", "--format", "nosuch"],  # bad choice
     "Usage: kefu prepare", "'nosuch' is not one of"),
    (["prepare", "{file}", "--out", "{tmp}/out", "--workers", "many"],  # bad type
     "Usage: kefu prepare", "Invalid value for '--workers'"),
    (["train", "--no-such-flag"], "Usage: kefu train", "No such option: --no-such-flag"),  # unknown option
    (["no-such-command"], "Usage: kefu", "No such command 'no-such-command'"),
])
def test_usage_errors_print_usage_and_exit_2(tmp_path, args, usage, problem):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "在吗"}]}\n', encoding="utf-8")
    args = [a.replace("{file}", str(data)).replace("{tmp}", str(tmp_path)) for a in args]
    result = _kefu(*args)
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err)
    assert usage in err and "Error:" in err and problem in err, err
    assert "Traceback" not in err + result.stdout and len(err.splitlines()) <= 6, err


def test_usage_error_through_python_m(tmp_path):
    result = _kefu("consent", "register", str(tmp_path / "x.jsonl"), "--source", "S", "--legal-basis", "consent",
                   module=True)
    assert result.returncode == 2, result.stderr
    assert "Usage: " in result.stderr and "consent register" in result.stderr
    assert "Missing option '--consent'" in result.stderr and "Traceback" not in result.stderr
