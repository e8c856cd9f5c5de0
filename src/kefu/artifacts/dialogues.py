"""Prepared dialogue JSONL (``DATA/train.jsonl``, ``val.jsonl``, ``test.jsonl``): its one reader and writer.

``kefu prepare`` writes one :class:`~kefu.types.Dialogue` per line (``{"id", "messages", "meta"}``); train, eval,
loop and the router read it back. Reading validates every line and names file and line on the first problem, so a
bad line in a 50k-line file is found at once. Generic JSONL rows (predictions, references) use :func:`iter_jsonl`
and :func:`write_jsonl` from here too, so every JSONL error reads the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from kefu.types import ROLES, Dialogue, KefuError, Turn

SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")


@dataclass(slots=True, frozen=True)
class PreparedLine:
    """One dialogue of a prepared file with the file and 1-based line it came from (for errors and provenance)."""

    path: Path
    line: int
    dialogue: Dialogue

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def prepared_file(data: str | Path, name: str = "train.jsonl") -> Path:
    """``data`` itself when it is a file (or missing), else the folder's ``name`` (KefuError when it has none)."""
    path = Path(data)
    if path.is_dir():
        file = path / name
        if not file.is_file():
            raise KefuError(f"{path}: no {name} in this folder (run `kefu prepare` first)")
        return file
    return path


def iter_jsonl(path: str | Path, *, empty_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise KefuError(f"{path}: file not found")
    if path.is_dir():
        raise KefuError(f"{path}: is a folder, expected a JSONL file")
    seen = False
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KefuError(f"{path}:{lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise KefuError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            seen = True
            yield lineno, obj
    if not seen and not empty_ok:
        raise KefuError(f"{path}: empty file (no JSON lines)")


def dialogue_from_json(obj: dict[str, Any], where: str) -> Dialogue:
    """A prepared line's object as a Dialogue; KefuError naming ``where`` when ``messages`` is malformed."""
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise KefuError(f"{where}: field 'messages' must be a list of {{role, content}}")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise KefuError(f"{where}: messages[{index}] needs role system|user|assistant and a string content")
        turns.append(Turn(message["role"], message["content"]))
    raw_id = obj.get("id")
    meta = obj.get("meta")
    return Dialogue(id="" if raw_id is None else str(raw_id), messages=turns,
                    meta=dict(meta) if isinstance(meta, dict) else {})


def read_dialogues(data: str | Path, name: str | None = "train.jsonl", *,
                   empty_ok: bool = True) -> Iterator[PreparedLine]:
    """Every dialogue of a prepared file, in file order. A folder means its ``name`` (``None``: folders are an
    error); an empty file yields nothing unless ``empty_ok`` is False."""
    path = prepared_file(data, name) if name is not None else Path(data)
    for lineno, obj in iter_jsonl(path, empty_ok=empty_ok):
        yield PreparedLine(path, lineno, dialogue_from_json(obj, f"{path}:{lineno}"))


def messages_of(dialogue: Dialogue) -> list[dict[str, str]]:
    """The dialogue's turns as chat-template messages (``[{"role", "content"}]``)."""
    return [{"role": t.role, "content": t.content} for t in dialogue.messages]


def dialogue_line(dialogue: Dialogue) -> str:
    """One prepared JSONL line (no newline): compact, Chinese kept readable; what ``kefu prepare`` writes."""
    return json.dumps(dialogue.to_dict(), ensure_ascii=False, separators=(",", ":"))


def write_dialogues(path: str | Path, dialogues: Iterable[Dialogue]) -> int:
    """Write ``dialogues`` as a prepared JSONL file (parent folders created); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for dialogue in dialogues:
            handle.write(dialogue_line(dialogue) + "\n")
            n += 1
    return n


def json_line(row: dict[str, Any]) -> str:
    """One generic JSONL row (no newline), Chinese kept readable; values JSON cannot hold become strings."""
    return json.dumps(row, ensure_ascii=False, default=str)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write generic rows (predictions, metrics, fixtures) as UTF-8 JSONL, parent folders created; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json_line(row) + "\n")
    return path
