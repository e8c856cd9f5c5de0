"""LLaMA-Factory ``dataset_info.json``: one resolver turns it into its datasets and their local files, used both to
read them (with each entry's formatting and column/tag mapping) and to know which files a folder walk, the progress
total and the audit should count as read through it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kefu.data.readers.common import DATA_SUFFIXES, BadFile, FileReject, Progress, guarded, raw_text
from kefu.data.readers.encoding import sniff_encoding
from kefu.data.readers.json_formats import read_json
from kefu.types import Dialogue, Reject

FORMATTINGS = ("alpaca", "sharegpt", "openai")
REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(slots=True)
class DatasetEntry:
    """One dataset of a dataset_info.json: its local data files, how to read them, or why it cannot be read."""

    name: str
    files: list[Path]
    formatting: str = "alpaca"
    mapping: dict[str, Any] = field(default_factory=dict)  # {"columns": {...}, "tags": {...}}
    problem: str | None = None  # set: the entry becomes one Reject
    raw: str = ""  # the entry as text, for that Reject


def looks_like_dataset_info(value: Any) -> bool:
    """Whether a parsed JSON document is a dataset_info.json (whatever the file is called)."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(v, dict) and ({"file_name", "hf_hub_url", "ms_hub_url", "formatting"} & set(v))
        for v in value.values())


def resolve_dataset_info(path: Path) -> list[DatasetEntry]:
    """The datasets of ``path`` in file order; a folder ``file_name`` means its data files (sorted).

    Raises ``BadFile`` when the file is not a JSON object of dataset name -> entry.
    """
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadFile(f"not a valid dataset_info.json: {exc}") from exc
    if not isinstance(info, dict):
        raise BadFile("dataset_info.json must be an object of dataset name -> entry")
    entries = []
    for name, entry in info.items():
        if not isinstance(entry, dict):
            entries.append(DatasetEntry(name, [], problem=f"dataset {name!r}: entry must be an object",
                                        raw=raw_text(json.dumps(entry))))
            continue
        file_name = entry.get("file_name")
        if not file_name:
            remote = next((k for k in REMOTE_KEYS if k in entry), None)
            reason = (f"dataset {name!r}: {remote} datasets are not read (kefu works offline; download the file and "
                      f"set file_name)" if remote else f"dataset {name!r}: missing field 'file_name'")
            entries.append(DatasetEntry(name, [], problem=reason, raw=raw_text(json.dumps(entry, ensure_ascii=False))))
            continue
        target = Path(path).parent / file_name
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES) \
            if target.is_dir() else [target] if target.exists() else []
        formatting = entry.get("formatting", "alpaca")
        mapping = {"columns": dict(entry.get("columns") or {}), "tags": dict(entry.get("tags") or {})}
        if formatting == "sharegpt" and "messages" not in mapping["columns"]:
            mapping["columns"]["messages"] = "conversations"
        problem = None
        if formatting not in FORMATTINGS:
            problem = f"dataset {name!r}: unsupported formatting {formatting!r}"
        elif not target.exists():
            problem = f"dataset {name!r}: file {file_name!r} not found next to {Path(path).name}"
        entries.append(DatasetEntry(name, files, formatting, mapping, problem))
    return entries


def dataset_info_files(path: Path) -> list[Path]:
    """The local data files a dataset_info.json points to, resolved (empty when it cannot be read)."""
    try:
        return [f.resolve() for entry in resolve_dataset_info(path) for f in entry.files]
    except (OSError, BadFile):
        return []


def read_dataset_info(path: Path, progress: Progress | None, on_error: str) -> Iterator[Dialogue | Reject]:
    """The dialogues of every dataset the file names, each file read with its entry's formatting and mapping."""
    entries = resolve_dataset_info(path)
    if progress:
        progress(path.stat().st_size)
    for entry in entries:
        if entry.problem is not None:
            yield FileReject(str(path), None, entry.problem, entry.raw)
            continue
        for data_file in entry.files:
            yield from guarded(data_file, on_error, lambda f=data_file, e=entry: read_json(
                f, sniff_encoding(f), e.formatting, progress, e.mapping))
