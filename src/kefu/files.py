"""Small structured files every stage reads (run records, kefu.yaml, rule files): one reader, errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kefu.types import KefuError


def read_yaml_mapping(path: str | Path, *, holds: str = "settings", missing: str = "file not found") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``). KefuError naming the file when it is
    missing (with ``missing`` saying what it is), not valid YAML, or not a mapping (``holds`` says of what)."""
    source = Path(path)
    if not source.is_file():
        raise KefuError(f"{source}: {missing}")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise KefuError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise KefuError(f"{source}: the top level must be a mapping of {holds}")
    return data
