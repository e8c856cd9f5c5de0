"""CLI commands of the eval stage; `register` adds them to the root `kefu` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
