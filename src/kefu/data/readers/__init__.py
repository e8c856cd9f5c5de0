"""Raw chat logs in the formats shops actually have, streamed as :class:`Dialogue` records: ``read_logs`` picks the
reader per file.

Formats: OpenAI ``messages`` (JSON/JSONL), ShareGPT (``conversations`` of from/value), Alpaca
(instruction/input/output/history/system), LLaMA-Factory ``dataset_info.json`` entries (the files they point to,
with their column and tag mappings), one-row-per-turn tables (CSV/TSV/JSONL rows; e.g. the JDDC TSV with no header)
and speaker-prefixed TXT (``顾客：...`` / ``客服：...``, a blank line between dialogues). One module per format:
:mod:`.json_formats`, :mod:`.table`, :mod:`.text`, :mod:`.dataset_info`; :mod:`.encoding` sniffs and decodes bytes.

Every reader is a generator: memory stays flat however large the file. Each record keeps ``meta.source`` and
``meta.line`` (first line of the record, 1-based). Unusable input becomes a :class:`Reject` naming the file and line
(``on_error="skip"``) or a :class:`KefuError` (``on_error="fail"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from kefu.data.config import FORMATS as CONFIG_FORMATS
from kefu.data.readers.common import DATA_SUFFIXES, FileReject, NotDialogues, Progress, guarded
from kefu.data.readers.dataset_info import dataset_info_files, looks_like_dataset_info, read_dataset_info
from kefu.data.readers.encoding import SNIFF_BYTES, sniff_encoding
from kefu.data.readers.json_formats import read_json, sniff_json_container
from kefu.data.readers.table import read_table
from kefu.data.readers.text import TXT_PREFIX, read_txt
from kefu.types import Dialogue, KefuError, Reject

FORMATS = tuple(f for f in CONFIG_FORMATS if f != "auto")  # what ``format=`` may name besides auto


def expand_inputs(inputs: list[Path], out_dir: Path | None = None, catalogue: Path | None = None
                  ) -> list[tuple[Path, bool]]:
    """Files to read, in a stable order, each with ``explicit`` (named by the user, not found in a folder).

    Folders are walked recursively (hidden files, the output folder and the catalogue are left out); files that a
    ``dataset_info.json`` in the walk points to are read through it, with its column mapping, and not twice.
    """
    skip = {p.resolve() for p in [catalogue] if p}
    out_resolved = out_dir.resolve() if out_dir else None
    files: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise KefuError(f"{path}: no such file or folder")
        if path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append((path, True))
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        referenced = {f for p in found if p.name == "dataset_info.json" for f in dataset_info_files(p)}
        for p in found:
            resolved = p.resolve()
            if resolved in skip or resolved in referenced or resolved in seen:
                continue
            if out_resolved and (resolved == out_resolved or out_resolved in resolved.parents):
                continue
            seen.add(resolved)
            files.append((p, False))
    return files


def detect_format(path: Path, encoding: str | None = None) -> str:
    """Guess a file's format from its name and first records; raises ``NotDialogues`` when none fits."""
    path = Path(path)
    if path.name == "dataset_info.json":
        return "llamafactory"
    suffix = path.suffix.lower()
    encoding = encoding or sniff_encoding(path)
    if suffix in (".csv", ".tsv"):
        return "turns"
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    with open(path, encoding=codec, errors="replace") as handle:
        sample = handle.read(SNIFF_BYTES)
    lines = [line for line in sample.splitlines() if line.strip()][:20]
    if suffix == ".txt":
        if lines and sum(line.count("\t") >= 2 for line in lines) >= max(1, len(lines) // 2):
            return "turns"
        return "txt"
    if suffix in (".json", ".jsonl", ".ndjson"):
        stripped = sample.lstrip()
        if stripped.startswith("{") and sniff_json_container(path, encoding) == "object":
            try:
                value = json.loads(Path(path).read_text(encoding=codec))
            except ValueError:
                value = None
            if looks_like_dataset_info(value):
                return "llamafactory"
        return "auto"  # schema decided from the first record
    if lines and TXT_PREFIX.match(lines[0]):
        return "txt"
    raise NotDialogues(f"unknown file type {suffix or '(no extension)'}")


def read_logs(path: str | Path, format: str = "auto", on_error: str = "skip", *,
                   progress: Progress | None = None,
                   unrecognised: Callable[[Path, str], None] | None = None) -> Iterator[Dialogue | Reject]:
    """Stream the dialogues of one file as :class:`Dialogue` (or :class:`Reject` for what cannot be used).

    ``format``: ``auto`` (detected per file) or one of :data:`FORMATS`. ``on_error``: ``skip`` yields Rejects,
    ``fail`` raises :class:`KefuError` at the first problem. ``progress(n)`` is called with bytes read.
    ``unrecognised(path, reason)``, when given, is told about valid files that hold no chat logs instead of a Reject.
    Dialogues are raw (not cleaned): roles are ``system``/``user``/``assistant``; ``meta`` has ``source``/``line``.
    A folder is read file by file (as ``kefu prepare`` walks it); files in it that hold no chat logs are skipped.
    """
    path = Path(path)
    if format not in ("auto", *FORMATS):
        raise KefuError(f"unknown format {format!r}; choose one of auto, {', '.join(FORMATS)}")
    if on_error not in ("skip", "fail"):
        raise KefuError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
    if path.is_dir():
        return _read_folder(path, format, on_error, progress, unrecognised)
    if not path.exists():
        raise KefuError(f"{path}: no such file")

    def make() -> Iterable[Dialogue | Reject]:
        fmt = format
        if fmt == "llamafactory" or (fmt == "auto" and path.name == "dataset_info.json"):
            return read_dataset_info(path, progress, on_error)
        encoding = sniff_encoding(path)
        if fmt == "auto":
            fmt = detect_format(path, encoding)
            if fmt == "llamafactory":
                return read_dataset_info(path, progress, on_error)
        suffix = path.suffix.lower()
        if fmt == "txt":
            return read_txt(path, encoding, progress)
        if fmt == "turns" and suffix not in (".json", ".jsonl", ".ndjson"):
            return read_table(path, encoding, progress)
        return read_json(path, encoding, fmt, progress)

    return guarded(path, on_error, make, unrecognised)


def file_problem(path: str | Path, format: str = "auto", *, explicit: bool = True) -> str | None:
    """Why not one dialogue can be read from ``path`` (empty, binary, wrong encoding, unknown format, not JSON at
    all, every record rejected), or None when it yields at least one. Reads only up to the first dialogue.

    A file found in a folder walk (``explicit=False``) that is valid data but holds no chat logs (a catalogue) is
    not a problem: ``kefu prepare`` lists it under ``skipped_files``.
    """
    not_chat: list[str] = []
    items = read_logs(path, format, "skip", unrecognised=None if explicit else (lambda p, why: not_chat.append(why)))
    rejected = 0
    first: Reject | None = None
    try:
        for item in items:
            if not isinstance(item, Reject):
                return None
            first = first or item
            rejected += not isinstance(item, FileReject)
    finally:
        items.close()
    if not_chat:
        return None
    if first is None:
        return "no dialogues in it"
    if isinstance(first, FileReject) and not rejected:
        return first.reason
    where = f"line {first.line}: " if first.line else ""
    return f"not one usable record: all {rejected} rejected ({where}{first.reason})"


def _read_folder(path: Path, format: str, on_error: str, progress: Progress | None,
                 unrecognised: Callable[[Path, str], None] | None) -> Iterator[Dialogue | Reject]:
    """Every chat-log file under a folder, in a stable order; files holding no chat logs are passed over."""
    for file, _ in expand_inputs([path]):
        yield from read_logs(file, format, on_error, progress=progress,
                             unrecognised=unrecognised or (lambda p, why: None))
