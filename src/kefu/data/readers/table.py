"""One-row-per-turn tables (CSV/TSV with session/speaker/content columns, or header-less JDDC TSV): consecutive rows
of a session become one dialogue. JSONL files whose rows are turns use the same column rules."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Iterator

from kefu.data.readers.common import (ROLE_ALIASES, BadFile, BadRecord, NotDialogues, Progress, make_dialogue,
                                      raw_text, role_of)
from kefu.data.readers.encoding import text_lines
from kefu.types import Dialogue, Reject, Turn

# Column names of one-row-per-turn tables (lower-case, without spaces/underscores).
SESSION_COLUMNS = ["sessionid", "session", "conversationid", "conversation", "convid", "dialogid", "dialogueid",
                   "chatid", "threadid", "会话id", "会话编号", "会话", "对话id", "对话编号", "sid"]
SPEAKER_COLUMNS = ["speaker", "role", "from", "sender", "waitersend", "isagent", "issupport", "who", "side",
                   "角色", "说话人", "发送方", "发送者", "是否客服发送", "身份"]
CONTENT_COLUMNS = ["content", "text", "message", "msg", "utterance", "value", "body", "内容", "消息", "文本",
                   "对话内容", "消息内容", "聊天内容"]
JDDC_SEPARATOR = "!@@@!"
csv.field_size_limit(1 << 24)  # long pasted messages exceed the 128 KiB default


def _norm_column(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower().lstrip("\ufeff")


def turn_columns(header: list[str]) -> tuple[int, int, int] | None:
    """Indices of (session, speaker, content) among column names, or None."""
    names = [_norm_column(h) for h in header]

    def find(candidates: list[str]) -> int | None:
        for candidate in candidates:
            if candidate in names:
                return names.index(candidate)
        return None

    found = (find(SESSION_COLUMNS), find(SPEAKER_COLUMNS), find(CONTENT_COLUMNS))
    return None if None in found else found  # type: ignore[return-value]


def missing_columns(header: list[str]) -> list[str]:
    names = [_norm_column(h) for h in header]
    missing = []
    for label, candidates in (("session id", SESSION_COLUMNS), ("speaker", SPEAKER_COLUMNS),
                              ("content", CONTENT_COLUMNS)):
        if not any(c in names for c in candidates):
            missing.append(label)
    return missing


class Sessions:
    """Groups consecutive rows of one session into a dialogue."""

    def __init__(self, source: str):
        self.source = source
        self.key: str | None = None
        self.turns: list[Turn] = []
        self.line = 0
        self.meta: dict[str, Any] = {}

    def add(self, session: str, role: str, content: str, line: int) -> Dialogue | None:
        done = None
        if session != self.key:
            done = self.flush()
            self.key, self.line = session, line
        # JDDC joins several agent messages with !@@@!; they become consecutive turns (merged later)
        for part in content.split(JDDC_SEPARATOR) if JDDC_SEPARATOR in content else (content,):
            self.turns.append(Turn(role, part))
        return done

    def flush(self) -> Dialogue | None:
        if self.key is None:
            return None
        dialogue = make_dialogue(self.turns, self.source, self.line, self.key)
        self.key, self.turns = None, []
        return dialogue


def _sniff_delimiter(first_line: str, suffix: str) -> str:
    if suffix == ".tsv" or first_line.count("\t") > first_line.count(","):
        return "\t"
    return ","


def read_table(path: Path, encoding: str, progress: Progress | None) -> Iterator[Dialogue | Reject | BadRecord]:
    """CSV/TSV with a header naming session/speaker/content columns, or header-less JDDC-style TSV."""
    source = str(path)
    bad_lines: set[int] = set()
    lines = text_lines(path, encoding, progress, bad_lines)
    first = next(((n, t, r) for n, t, r in lines if t is None or t.strip()), None)
    if first is None:
        raise BadFile("empty file")
    if first[1] is None:
        raise BadFile(f"line {first[0]}: not valid {encoding}")
    delimiter = _sniff_delimiter(first[1], path.suffix.lower())
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL

    line_no = first[0] - 1
    raw_by_line: dict[int, bytes] = {}

    def texts() -> Iterator[str]:
        nonlocal line_no
        for number, text, raw in _chain(first, lines):
            line_no = number
            raw_by_line[number] = raw
            yield text if text is not None else raw.decode("utf-8", errors="replace")

    reader = csv.reader(texts(), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise BadFile(f"line {line_no}: not a valid table: {exc}") from exc
    columns = turn_columns(header)
    rows_start = line_no
    first_row: list[str] | None = None
    if columns is None:
        if len(header) == 7 and header[2].strip() in ("0", "1"):  # JDDC: session,user,waiter_send,...,content
            columns, first_row = (0, 2, 6), header
        elif len(header) in (3, 4) and header[-2].strip().lower() in ROLE_ALIASES:  # session,[turn,]speaker,content
            columns, first_row = (0, len(header) - 2, len(header) - 1), header
        else:
            missing = ", ".join(missing_columns(header))
            raise NotDialogues(f"line {rows_start}: missing column(s) {missing} (header: {delimiter.join(header)[:200]})")
    need = max(columns) + 1
    sessions = Sessions(source)
    start = rows_start

    def handle(row: list[str], line: int) -> Iterator[Dialogue | Reject | BadRecord]:
        raw = b"".join(raw_by_line.get(n, b"") for n in range(line, line_no + 1))
        if any(n in bad_lines for n in range(line, line_no + 1)):
            yield Reject(source, line, f"not valid {encoding}", raw_text(raw))
            return
        if not any(cell.strip() for cell in row):
            return
        if len(row) < need:
            yield Reject(source, line, f"row has {len(row)} field(s), expected at least {need} "
                                       f"(session, speaker, content)", raw_text(raw))
            return
        try:
            role = role_of(row[columns[1]], f"column {columns[1] + 1}")
        except BadRecord as exc:
            yield Reject(source, line, str(exc), raw_text(raw))
            return
        done = sessions.add(row[columns[0]].strip(), role, row[columns[2]], line)
        if done is not None:
            yield done

    try:
        if first_row is not None:
            yield from handle(first_row, rows_start)
        start = line_no + 1
        for row in reader:
            yield from handle(row, start)
            for n in range(start, line_no + 1):
                raw_by_line.pop(n, None)
                bad_lines.discard(n)
            start = line_no + 1
    except csv.Error as exc:
        yield Reject(source, start, f"not a valid table row: {exc}", raw_text(raw_by_line.get(start, b"")))
    last = sessions.flush()
    if last is not None:
        yield last


def _chain(first, rest):
    yield first
    yield from rest

