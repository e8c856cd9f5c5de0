"""Predictions on disk as they are made: a resumable JSONL writer and a progress line that works without a terminal.

``PredictionWriter(path, settings)`` appends one JSON line per sample and flushes it at once, so a run that is killed
(or runs out of memory) keeps every prediction it made. Opening it again on the same file resumes: the ids already
written are in ``done`` and the caller skips them; a last line cut off by the kill is dropped. ``settings`` (what
the predictions depend on: data file, run, turn selection...) are kept beside the file (``<name>.settings.json``) and
a resume under other settings is refused, so one file never mixes two setups.

``Progress`` (progress with an ETA that works without a terminal) lives in ``kefu.progress``; it is re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, TextIO

from kefu.progress import Progress
from kefu.types import KefuError

__all__ = ["PredictionWriter", "Progress", "read_predictions"]


def read_predictions(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete records of a predictions file, in file order (a cut-off last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.endswith("\n"):
                return  # a line cut off by a kill: not a prediction
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KefuError(f"{path}:{lineno}: not valid JSON ({exc}); remove the line or use another --out") \
                    from exc
            if not isinstance(record, dict) or record.get("id") is None:
                raise KefuError(f"{path}:{lineno}: a prediction line needs an 'id'")
            yield record


class PredictionWriter:
    """Append-only, flushed, resumable predictions file (see the module docstring)."""

    def __init__(self, path: str | Path, settings: dict[str, Any] | None = None, *, fsync: bool = False):
        self.path = Path(path)
        self.settings = settings or {}
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        self._drop_partial_line()
        self.done: set[str] = {str(r["id"]) for r in read_predictions(self.path)}
        self.resumed = len(self.done)
        self.written = 0
        self._handle: TextIO | None = open(self.path, "a", encoding="utf-8")

    @property
    def settings_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".settings.json")

    def _check_settings(self) -> None:
        wanted = json.loads(json.dumps(self.settings, ensure_ascii=False, default=str))
        if self.path.exists() and self.path.stat().st_size and self.settings_path.exists():
            kept = json.loads(self.settings_path.read_text(encoding="utf-8"))
            if kept != wanted:
                diff = sorted(k for k in set(kept) | set(wanted) if kept.get(k) != wanted.get(k))
                raise KefuError(f"{self.path}: written under other settings ({', '.join(diff)}); resume with the same "
                                "settings or write to another --out")
        self.settings_path.write_text(json.dumps(wanted, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    def _drop_partial_line(self) -> None:
        """Truncate a last line without its newline (the process was killed while writing it)."""
        if not self.path.exists() or not self.path.stat().st_size:
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data.endswith(b"\n"):
                return
            handle.truncate(data.rfind(b"\n") + 1)

    def __contains__(self, sample_id: object) -> bool:
        return str(sample_id) in self.done

    def write(self, record: dict[str, Any]) -> None:
        """Append one prediction (it must carry an ``id`` not written yet) and flush it to disk."""
        if self._handle is None:
            raise KefuError(f"{self.path}: writer is closed")
        rid = record.get("id")
        if rid is None:
            raise KefuError("a prediction record needs an 'id'")
        if str(rid) in self.done:
            raise KefuError(f"{self.path}: id {rid!r} is already written")
        self._handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.done.add(str(rid))
        self.written += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
