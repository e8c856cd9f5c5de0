"""The ``kefu`` command: a thin Typer layer; each stage registers its commands from ``kefu/<stage>/cli.py``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from kefu.config import load_config
from kefu.data import cli as data_cli
from kefu.eval import cli as eval_cli
from kefu.kg import cli as kg_cli
from kefu.loop import cli as loop_cli
from kefu.safety import cli as safety_cli
from kefu.serve import cli as serve_cli
from kefu.state import database
from kefu.train import cli as train_cli
from kefu.types import KefuError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="kefu (客服): from customer-service chat logs to a shop's own fine-tuned model, in production.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the project configuration (kefu.yaml).")
app.add_typer(config_app, name="config")
state_app = typer.Typer(no_args_is_help=True, help="The state backend (kefu.yaml state:): the shared database's schema.")
app.add_typer(state_app, name="state")
console = Console(stderr=True)


@config_app.command("show")
def config_show(config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml).")):
    """Print the effective configuration: defaults, then the file, then overrides."""
    effective = load_config(config).model_dump(mode="json")
    Console().print(Syntax(yaml.safe_dump(effective, allow_unicode=True, sort_keys=False), "yaml"))


@state_app.command("migrate")
def state_migrate(config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml)."),
                  url: Optional[str] = typer.Option(None, "--url", help="Database URL (default: the backend's).")):
    """Create or upgrade the shared PostgreSQL database to the newest schema; safe to repeat and to run while
    replicas start (they migrate too, one at a time)."""
    load_config(config)
    Console().print(f"state database at revision {database.migrate(url)}")


def _register_stages() -> None:
    for module in (data_cli, train_cli, eval_cli, kg_cli, serve_cli, safety_cli, loop_cli):
        module.register(app)


_register_stages()


def main() -> None:
    """Entry point: user-facing errors become one clear line and exit code 2, not a traceback.

    The app runs with ``standalone_mode=False`` so that kefu's own errors can be printed here; click's standalone
    handling of usage errors is then off, so this does it: a usage error (missing option or argument, bad choice or
    type, unknown option, no such command) prints the command's usage line, a hint and the problem, and exits 2.
    Typer vendors click, so its exceptions derive from the public ``typer.TyperException`` (not ``click``'s).
    """
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising in this mode
        if isinstance(code, int) and code:
            sys.exit(code)
    except KefuError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")  # escaped: paths and data may hold [brackets]
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # click's ClickException/UsageError (usage line + problem) and the rest
        show = getattr(exc, "show", None)
        if callable(show):
            show()  # plain text on stderr: "Usage: kefu ...", "Try 'kefu ... --help' for help.", "Error: ..."
        else:
            console.print(f"[bold red]error:[/] {escape(exc.format_message())}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
