"""Where kefu keeps its state: everything lives under ``$KEFU_HOME`` (default ``~/.kefu``)."""

from __future__ import annotations

import os
from pathlib import Path


def kefu_home() -> Path:
    """The state folder, created on first use. Read from the environment on every call so tests can isolate it."""
    home = Path(os.environ.get("KEFU_HOME") or Path.home() / ".kefu").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def state_path(*parts: str) -> Path:
    """A path under ``$KEFU_HOME``; its parent folder exists."""
    path = kefu_home().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
