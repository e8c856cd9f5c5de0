"""Streaming readers: chat logs in the formats shops actually have, turned into :class:`Dialogue` records.

Formats: OpenAI ``messages`` (JSON/JSONL), ShareGPT (``conversations`` of from/value), Alpaca
(instruction/input/output/history/system), LLaMA-Factory ``dataset_info.json`` entries (the files they point to,
with their column and tag mappings), one-row-per-turn tables (CSV/TSV/JSONL rows; e.g. the JDDC TSV with no header)
and speaker-prefixed TXT (``顾客：...`` / ``客服：...``, a blank line between dialogues).

Every reader is a generator: memory stays flat however large the file (JSON arrays are decoded element by element
with :meth:`json.JSONDecoder.raw_decode` over a sliding buffer). Each record keeps ``meta.source`` and ``meta.line``
(first line of the record, 1-based). Unusable input becomes a :class:`Reject` naming the file and line
(``on_error="skip"``) or a :class:`KefuError` (``on_error="fail"``).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from kefu.types import Dialogue, KefuError, Reject, Turn

FORMATS = ("openai", "sharegpt", "alpaca", "llamafactory", "turns", "txt")
DATA_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt"}
SNIFF_BYTES = 1 << 16
RAW_LIMIT = 2000  # characters of the offending input kept in rejects.jsonl
MAX_JSON_ELEMENT = 64 << 20  # a single JSON array element larger than this is treated as malformed

Progress = Callable[[int], None]

# Speaker names seen in real logs -> role. Keys are lower-case.
ROLE_ALIASES: dict[str, str] = {
    **dict.fromkeys(["user", "human", "customer", "buyer", "client", "q", "question", "顾客", "用户", "买家", "客户",
                     "访客", "0", "customer_send", "observation", "function", "tool"], "user"),
    **dict.fromkeys(["assistant", "gpt", "agent", "bot", "seller", "staff", "waiter", "a", "answer", "model",
                     "客服", "卖家", "商家", "店家", "店小二", "人工客服", "机器人", "1", "function_call"], "assistant"),
    **dict.fromkeys(["system", "系统", "系统消息"], "system"),
}
TXT_PREFIX = re.compile(
    r"^\s*(顾客|客服|用户|买家|卖家|客户|商家|系统|user|assistant|system|customer|agent|human|bot|q|a)\s*[:：]\s?(.*)$",
    re.I)

# Column names of one-row-per-turn tables (lower-case, without spaces/underscores).
SESSION_COLUMNS = ["sessionid", "session", "conversationid", "conversation", "convid", "dialogid", "dialogueid",
                   "chatid", "threadid", "会话id", "会话编号", "会话", "对话id", "对话编号", "sid"]
SPEAKER_COLUMNS = ["speaker", "role", "from", "sender", "waitersend", "isagent", "issupport", "who", "side",
                   "角色", "说话人", "发送方", "发送者", "是否客服发送", "身份"]
CONTENT_COLUMNS = ["content", "text", "message", "msg", "utterance", "value", "body", "内容", "消息", "文本",
                   "对话内容", "消息内容", "聊天内容"]
JDDC_SEPARATOR = "!@@@!"
csv.field_size_limit(1 << 24)  # long pasted messages exceed the 128 KiB default


class _BadRecord(Exception):
    """A record that cannot be used; becomes a Reject (or a KefuError under on_error="fail")."""


class _BadFile(Exception):
    """The whole file cannot be used (empty, binary, unknown encoding, no usable columns)."""


class _NotDialogues(Exception):
    """Valid data, but not chat logs (e.g. a product catalogue found while walking a folder)."""


# ----------------------------------------------------------------------------------------------------------------
# bytes and encodings


class _Counted(io.RawIOBase):
    """A raw file that reports how many bytes were read, for a progress bar over bytes."""

    def __init__(self, raw, progress: Progress | None):
        self._raw, self._progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n and self._progress:
            self._progress(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_binary(path: Path, progress: Progress | None) -> io.BufferedReader:
    return io.BufferedReader(_Counted(open(path, "rb", buffering=0), progress), buffer_size=1 << 16)


def sniff_encoding(path: Path) -> str:
    """Detect the encoding from the first 64 KiB: BOMs, then strict UTF-8, then GB18030 (a superset of GBK).

    Raises ``_BadFile`` for empty, binary or undecodable files.
    """
    with open(path, "rb") as handle:
        sample = handle.read(SNIFF_BYTES)
        at_end = not handle.read(1)
    if not sample.strip():
        raise _BadFile("empty file")
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        raise _BadFile("binary file (NUL bytes), not text")
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=at_end)
            return encoding
        except UnicodeDecodeError:
            continue
    raise _BadFile("not valid text in UTF-8 or GBK/GB18030 (wrong encoding?)")


def _decoded_lines(handle, encoding: str, bad_lines: set[int] | None = None) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when it does not decode, raw bytes); decoding line by line keeps one bad
    line from spoiling the file."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    for number, raw in enumerate(handle, start=1):
        if number == 1 and encoding == "utf-8-sig" and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            yield number, raw.decode(codec), raw
        except UnicodeDecodeError:
            if bad_lines is not None:
                bad_lines.add(number)
            yield number, None, raw


def _text_lines(path: Path, encoding: str, progress: Progress | None,
                bad_lines: set[int] | None = None) -> Iterator[tuple[int, str | None, bytes]]:
    if encoding == "utf-16":  # not line-splittable as bytes; rare in practice
        with open(path, encoding="utf-16", errors="replace", newline="") as handle:
            for number, text in enumerate(handle, start=1):
                if progress:
                    progress(len(text.encode("utf-16-le")))
                yield number, text, text.encode("utf-8")
        return
    with _open_binary(path, progress) as handle:
        yield from _decoded_lines(handle, encoding, bad_lines)


def _raw_text(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


# ----------------------------------------------------------------------------------------------------------------
# record schemas


def _role(value: Any, where: str) -> str:
    role = ROLE_ALIASES.get(str(value).strip().lower())
    if role is None:
        raise _BadRecord(f"unknown speaker {value!r} in {where}")
    return role


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):  # OpenAI content parts
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in value]
        return "".join(p for p in parts if isinstance(p, str))
    raise _BadRecord(f"{where} must be text, got {type(value).__name__}")


def _require_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _BadRecord(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_openai(obj: Any, tags: dict[str, str] | None = None) -> list[Turn]:
    """``{"messages": [{"role", "content"}, ...]}``."""
    obj = _require_dict(obj)
    tags = tags or {}
    key = tags.get("messages", "messages")
    messages = obj.get(key)
    if not isinstance(messages, list):
        raise _BadRecord(f"missing field {key!r} (a list of messages)")
    role_tag, content_tag = tags.get("role_tag", "role"), tags.get("content_tag", "content")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or role_tag not in message:
            raise _BadRecord(f"{key}[{i}]: missing field {role_tag!r}")
        turns.append(Turn(_mapped_role(message[role_tag], tags, f"{key}[{i}].{role_tag}"),
                          _text(message.get(content_tag), f"{key}[{i}].{content_tag}")))
    system = obj.get(tags.get("system", "system"))
    if isinstance(system, str) and system.strip() and not (turns and turns[0].role == "system"):
        turns.insert(0, Turn("system", system))
    return turns


def _mapped_role(value: Any, tags: dict[str, str], where: str) -> str:
    """Apply LLaMA-Factory's ``user_tag``/``assistant_tag``/... before the generic aliases."""
    for tag, role in (("user_tag", "user"), ("assistant_tag", "assistant"), ("system_tag", "system"),
                      ("observation_tag", "user"), ("function_tag", "assistant")):
        if tag in tags and value == tags[tag]:
            return role
    return _role(value, where)


def parse_sharegpt(obj: Any, tags: dict[str, str] | None = None) -> list[Turn]:
    """``{"conversations": [{"from": "human"|"gpt"|"system"|..., "value"}], "system"?: ...}``."""
    obj = _require_dict(obj)
    tags = dict(tags or {})
    key = tags.get("messages") or ("conversations" if "conversations" in obj else "messages")
    tags.setdefault("role_tag", "from")
    tags.setdefault("content_tag", "value")
    if key not in obj:
        raise _BadRecord(f"missing field {key!r} (a list of turns)")
    return parse_openai(obj, {**tags, "messages": key})


def parse_alpaca(obj: Any, columns: dict[str, str] | None = None) -> list[Turn]:
    """``{"instruction", "input"?, "output", "history"?: [[q, a], ...], "system"?}``."""
    obj = _require_dict(obj)
    columns = columns or {}
    prompt_key, query_key = columns.get("prompt", "instruction"), columns.get("query", "input")
    response_key, history_key = columns.get("response", "output"), columns.get("history", "history")
    system_key = columns.get("system", "system")
    if prompt_key not in obj:
        raise _BadRecord(f"missing field {prompt_key!r}")
    if response_key not in obj:
        raise _BadRecord(f"missing field {response_key!r}")
    turns: list[Turn] = []
    system = obj.get(system_key)
    if isinstance(system, str) and system.strip():
        turns.append(Turn("system", system))
    history = obj.get(history_key) or []
    if not isinstance(history, list):
        raise _BadRecord(f"{history_key!r} must be a list of [question, answer] pairs")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise _BadRecord(f"{history_key}[{i}] must be a [question, answer] pair")
        turns.append(Turn("user", _text(pair[0], f"{history_key}[{i}][0]")))
        turns.append(Turn("assistant", _text(pair[1], f"{history_key}[{i}][1]")))
    prompt = _text(obj.get(prompt_key), prompt_key)
    query = _text(obj.get(query_key), query_key)
    turns.append(Turn("user", f"{prompt}\n{query}" if prompt and query else prompt or query))
    response = obj.get(response_key)
    if isinstance(response, list):  # ranking data: [chosen, rejected]
        response = response[0] if response else ""
    turns.append(Turn("assistant", _text(response, response_key)))
    return turns


SCHEMA_PARSERS: dict[str, Callable[..., list[Turn]]] = {
    "openai": parse_openai, "sharegpt": parse_sharegpt, "alpaca": parse_alpaca,
}


def schema_of(obj: Any) -> str | None:
    """Which record schema a JSON object follows (None when it is no chat record)."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("conversations"), list):
        return "sharegpt"
    messages = obj.get("messages")
    if isinstance(messages, list):
        first = next((m for m in messages if isinstance(m, dict)), {})
        return "sharegpt" if "from" in first and "role" not in first else "openai"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if _turn_columns([str(k) for k in obj]) is not None:
        return "turns"
    return None


def _record_id(obj: dict[str, Any]) -> str | None:
    for key in ("id", "dialogue_id", "conversation_id", "session_id", "uuid"):
        value = obj.get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def _dialogue(turns: list[Turn], source: str, line: int, record_id: str | None,
              extra: dict[str, Any] | None = None) -> Dialogue:
    meta: dict[str, Any] = dict(extra) if extra else {}
    meta["source"] = source
    meta["line"] = line
    return Dialogue(id=record_id or f"{Path(source).name}:{line}", messages=turns, meta=meta)


# ----------------------------------------------------------------------------------------------------------------
# one-row-per-turn tables


def _norm_column(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower().lstrip("\ufeff")


def _turn_columns(header: list[str]) -> tuple[int, int, int] | None:
    """Indices of (session, speaker, content) among column names, or None."""
    names = [_norm_column(h) for h in header]

    def find(candidates: list[str]) -> int | None:
        for candidate in candidates:
            if candidate in names:
                return names.index(candidate)
        return None

    found = (find(SESSION_COLUMNS), find(SPEAKER_COLUMNS), find(CONTENT_COLUMNS))
    return None if None in found else found  # type: ignore[return-value]


def _missing_columns(header: list[str]) -> list[str]:
    names = [_norm_column(h) for h in header]
    missing = []
    for label, candidates in (("session id", SESSION_COLUMNS), ("speaker", SPEAKER_COLUMNS),
                              ("content", CONTENT_COLUMNS)):
        if not any(c in names for c in candidates):
            missing.append(label)
    return missing


class _Sessions:
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
        dialogue = _dialogue(self.turns, self.source, self.line, self.key)
        self.key, self.turns = None, []
        return dialogue


def _sniff_delimiter(first_line: str, suffix: str) -> str:
    if suffix == ".tsv" or first_line.count("\t") > first_line.count(","):
        return "\t"
    return ","


def _read_table(path: Path, encoding: str, progress: Progress | None) -> Iterator[Dialogue | Reject | _BadRecord]:
    """CSV/TSV with a header naming session/speaker/content columns, or header-less JDDC-style TSV."""
    source = str(path)
    bad_lines: set[int] = set()
    lines = _text_lines(path, encoding, progress, bad_lines)
    first = next(((n, t, r) for n, t, r in lines if t is None or t.strip()), None)
    if first is None:
        raise _BadFile("empty file")
    if first[1] is None:
        raise _BadFile(f"line {first[0]}: not valid {encoding}")
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
        raise _BadFile(f"line {line_no}: not a valid table: {exc}") from exc
    columns = _turn_columns(header)
    rows_start = line_no
    first_row: list[str] | None = None
    if columns is None:
        if len(header) == 7 and header[2].strip() in ("0", "1"):  # JDDC: session,user,waiter_send,...,content
            columns, first_row = (0, 2, 6), header
        elif len(header) in (3, 4) and header[-2].strip().lower() in ROLE_ALIASES:  # session,[turn,]speaker,content
            columns, first_row = (0, len(header) - 2, len(header) - 1), header
        else:
            missing = ", ".join(_missing_columns(header))
            raise _NotDialogues(f"line {rows_start}: missing column(s) {missing} (header: {delimiter.join(header)[:200]})")
    need = max(columns) + 1
    sessions = _Sessions(source)
    start = rows_start

    def handle(row: list[str], line: int) -> Iterator[Dialogue | Reject | _BadRecord]:
        raw = b"".join(raw_by_line.get(n, b"") for n in range(line, line_no + 1))
        if any(n in bad_lines for n in range(line, line_no + 1)):
            yield Reject(source, line, f"not valid {encoding}", _raw_text(raw))
            return
        if not any(cell.strip() for cell in row):
            return
        if len(row) < need:
            yield Reject(source, line, f"row has {len(row)} field(s), expected at least {need} "
                                       f"(session, speaker, content)", _raw_text(raw))
            return
        try:
            role = _role(row[columns[1]], f"column {columns[1] + 1}")
        except _BadRecord as exc:
            yield Reject(source, line, str(exc), _raw_text(raw))
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
        yield Reject(source, start, f"not a valid table row: {exc}", _raw_text(raw_by_line.get(start, b"")))
    last = sessions.flush()
    if last is not None:
        yield last


def _chain(first, rest):
    yield first
    yield from rest


# ----------------------------------------------------------------------------------------------------------------
# JSON / JSONL


def _iter_json_array(text: io.TextIOBase, path: Path) -> Iterator[tuple[int, Any] | tuple[int, _BadRecord]]:
    """Yield (line, element) for each element of a top-level JSON array, reading 64 KiB at a time."""
    decoder = json.JSONDecoder()
    buf, pos, line, eof = "", 0, 1, False
    whitespace = " \t\r\n"

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = text.read(SNIFF_BYTES)
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip_ws() -> str:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in whitespace:
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    if skip_ws() != "[":
        yield line, _BadRecord("expected a JSON array")
        return
    pos += 1
    expect_value = True
    while True:
        ch = skip_ws()
        if ch == "":
            yield line, _BadRecord("unexpected end of file inside the JSON array (truncated?)")
            return
        if ch == "]":
            return
        if not expect_value:
            if ch != ",":
                yield line, _BadRecord(f"expected ',' or ']' between array elements, found {ch!r}")
                return
            pos += 1
            expect_value = True
            continue
        while True:
            try:
                obj, end = decoder.raw_decode(buf, pos)
                if end < len(buf) or eof:
                    break
            except json.JSONDecodeError as exc:
                if eof or len(buf) - pos > MAX_JSON_ELEMENT:
                    yield line, _BadRecord(f"malformed JSON: {exc.msg} (line {line + buf.count(chr(10), pos, exc.pos)})")
                    return
            if not fill():
                continue
        start_line = line
        line += buf.count("\n", pos, end)
        pos = end
        expect_value = False
        yield start_line, obj


def _sniff_json_container(path: Path, encoding: str) -> str:
    """'array', 'lines' (JSONL) or 'object' (one JSON document that is an object)."""
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    with open(path, encoding=codec, errors="replace") as handle:
        sample = handle.read(SNIFF_BYTES)
        rest = handle.read(1)
    stripped = sample.lstrip()
    if stripped.startswith("["):
        return "array"
    first_line = stripped.split("\n", 1)[0].strip()
    try:
        json.loads(first_line)
        if "\n" in stripped.strip():
            return "lines"
    except json.JSONDecodeError:
        if stripped.startswith("{"):  # a pretty-printed object: one document, however large
            return "object"
    if not rest:
        try:
            value = json.loads(stripped)
            return "object" if isinstance(value, dict) else "lines"
        except json.JSONDecodeError:
            return "lines"
    return "lines"


def _json_elements(path: Path, encoding: str, progress: Progress | None
                   ) -> Iterator[tuple[int, Any, str] | tuple[int, _BadRecord, str]]:
    """(line, parsed value or _BadRecord, raw text) for each record of a JSON/JSONL file."""
    container = _sniff_json_container(path, encoding)
    if container == "array":
        codec = "utf-8-sig" if encoding == "utf-8" else encoding
        with _open_binary(path, progress) as raw, io.TextIOWrapper(raw, encoding=codec, errors="strict") as text:
            try:
                for line, value in _iter_json_array(text, path):
                    yield line, value, "" if not isinstance(value, _BadRecord) else ""
            except UnicodeDecodeError as exc:
                yield 0, _BadRecord(f"not valid {encoding}: {exc.reason}"), ""
        return
    if container == "object":
        with _open_binary(path, progress) as raw:
            data = raw.read().decode(encoding if encoding != "utf-8" else "utf-8-sig")
        value = json.loads(data)
        items = value.get("data") if isinstance(value.get("data"), list) else [value]
        for item in items:
            yield 1, item, ""
        return
    for number, text, raw in _text_lines(path, encoding, progress):
        if text is None:
            yield number, _BadRecord(f"not valid {encoding}"), _raw_text(raw)
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), text
        except json.JSONDecodeError as exc:
            yield number, _BadRecord(f"malformed JSON: {exc.msg} at column {exc.colno}"), _raw_text(text)


def _read_json(path: Path, encoding: str, fmt: str, progress: Progress | None,
               mapping: dict[str, Any] | None = None, source: str | None = None
               ) -> Iterator[Dialogue | Reject]:
    source = source or str(path)
    mapping = mapping or {}
    columns, tags = mapping.get("columns") or {}, mapping.get("tags") or {}
    schema = None if fmt == "auto" else fmt
    sessions: _Sessions | None = None
    turn_cols: tuple[str, str, str] | None = None
    first = True
    for line, value, raw in _json_elements(path, encoding, progress):
        if isinstance(value, _BadRecord):
            yield Reject(source, line or None, str(value), raw)
            continue
        if schema is None:
            schema = schema_of(value)
            if schema is None:
                if first:
                    raise _NotDialogues(f"line {line}: records are not chat logs (no messages/conversations/"
                                        f"instruction+output/session+speaker+content fields)")
                schema = "openai"
        first = False
        raw = raw or _raw_text(json.dumps(value, ensure_ascii=False))
        try:
            if schema == "turns":
                obj = _require_dict(value)
                keys = [str(k) for k in obj]
                cols = _turn_columns(keys)
                if cols is None:
                    raise _BadRecord(f"missing column(s) {', '.join(_missing_columns(keys))}")
                turn_cols = (keys[cols[0]], keys[cols[1]], keys[cols[2]])
                sessions = sessions or _Sessions(source)
                done = sessions.add(str(obj[turn_cols[0]]), _role(obj[turn_cols[1]], turn_cols[1]),
                                    _text(obj[turn_cols[2]], turn_cols[2]), line)
                if done is not None:
                    yield done
                continue
            if schema == "alpaca":
                turns = parse_alpaca(value, columns)
            elif schema == "sharegpt":
                turns = parse_sharegpt(value, {**tags, **({"messages": columns["messages"]} if "messages" in columns
                                                          else {}), **({"system": columns["system"]}
                                                                       if "system" in columns else {})})
            else:
                turns = parse_openai(value, tags)
        except _BadRecord as exc:
            yield Reject(source, line, str(exc), raw)
            continue
        extra = value.get("meta") if isinstance(value.get("meta"), dict) else None
        yield _dialogue(turns, source, line, _record_id(value), extra)
    if sessions is not None:
        last = sessions.flush()
        if last is not None:
            yield last


# ----------------------------------------------------------------------------------------------------------------
# TXT


def _read_txt(path: Path, encoding: str, progress: Progress | None) -> Iterator[Dialogue | Reject]:
    """Speaker-prefixed lines; a line without a prefix continues the previous turn; a blank line ends a dialogue."""
    source = str(path)
    turns: list[Turn] = []
    start = 0
    seen_prefix = False
    for number, text, raw in _text_lines(path, encoding, progress):
        if text is None:
            yield Reject(source, number, f"not valid {encoding}", _raw_text(raw))
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            if turns:
                yield _dialogue(turns, source, start, None)
                turns = []
            continue
        match = TXT_PREFIX.match(text)
        if match:
            seen_prefix = True
            if not turns:
                start = number
            turns.append(Turn(ROLE_ALIASES[match.group(1).lower()], match.group(2)))
        elif turns:
            turns[-1].content += "\n" + text.strip()
        else:
            if not seen_prefix and number > 50:
                raise _NotDialogues("no speaker-prefixed lines (顾客：/客服：/User:/Assistant: ...) in the first 50 lines")
            yield Reject(source, number, "line has no speaker prefix (顾客：/客服：/User:/Assistant: ...) and "
                                         "does not continue a turn", _raw_text(text))
    if turns:
        yield _dialogue(turns, source, start, None)


# ----------------------------------------------------------------------------------------------------------------
# LLaMA-Factory dataset_info.json


def _read_dataset_info(path: Path, progress: Progress | None, on_error: str
                       ) -> Iterator[Dialogue | Reject]:
    """Each entry names a local file (``file_name``), its ``formatting`` and ``columns``/``tags`` mappings."""
    source = str(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadFile(f"not a valid dataset_info.json: {exc}") from exc
    if progress:
        progress(path.stat().st_size)
    if not isinstance(info, dict):
        raise _BadFile("dataset_info.json must be an object of dataset name -> entry")
    for name, entry in info.items():
        if not isinstance(entry, dict):
            yield Reject(source, None, f"dataset {name!r}: entry must be an object", _raw_text(json.dumps(entry)))
            continue
        file_name = entry.get("file_name")
        if not file_name:
            remote = next((k for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
                           if k in entry), None)
            reason = (f"dataset {name!r}: {remote} datasets are not read (kefu works offline; download the file and "
                      f"set file_name)" if remote else f"dataset {name!r}: missing field 'file_name'")
            yield Reject(source, None, reason, _raw_text(json.dumps(entry, ensure_ascii=False)))
            continue
        formatting = entry.get("formatting", "alpaca")
        if formatting not in ("alpaca", "sharegpt", "openai"):
            yield Reject(source, None, f"dataset {name!r}: unsupported formatting {formatting!r}", "")
            continue
        target = (path.parent / file_name)
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES) \
            if target.is_dir() else [target]
        if not target.exists():
            yield Reject(source, None, f"dataset {name!r}: file {file_name!r} not found next to {path.name}", "")
            continue
        mapping = {"columns": entry.get("columns") or {}, "tags": entry.get("tags") or {}}
        if formatting == "sharegpt" and "messages" not in mapping["columns"]:
            mapping["columns"]["messages"] = "conversations"
        for data_file in files:
            yield from _guarded(data_file, on_error, lambda f=data_file: _read_json(
                f, sniff_encoding(f), formatting, progress, mapping))


def dataset_info_files(path: Path) -> set[Path]:
    """The local files a dataset_info.json points to (so a folder walk does not read them twice)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return set()
    files: set[Path] = set()
    for entry in info.values() if isinstance(info, dict) else ():
        if isinstance(entry, dict) and entry.get("file_name"):
            target = (path.parent / entry["file_name"]).resolve()
            files.update(p.resolve() for p in target.rglob("*")) if target.is_dir() else files.add(target)
    return files


# ----------------------------------------------------------------------------------------------------------------
# public API


def detect_format(path: Path, encoding: str | None = None) -> str:
    """Guess a file's format from its name and first records; raises ``_NotDialogues`` when none fits."""
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
        if stripped.startswith("{") and _sniff_json_container(path, encoding) == "object":
            try:
                value = json.loads(Path(path).read_text(encoding=codec))
            except ValueError:
                value = None
            if isinstance(value, dict) and value and all(
                    isinstance(v, dict) and ({"file_name", "hf_hub_url", "ms_hub_url", "formatting"} & set(v))
                    for v in value.values()):
                return "llamafactory"
        return "auto"  # schema decided from the first record
    if lines and TXT_PREFIX.match(lines[0]):
        return "txt"
    raise _NotDialogues(f"unknown file type {suffix or '(no extension)'}")


def _guarded(path: Path, on_error: str, make: Callable[[], Iterable[Dialogue | Reject]],
             unrecognised: Callable[[Path, str], None] | None = None) -> Iterator[Dialogue | Reject]:
    """Turn file-level problems into one Reject; under on_error="fail" raise KefuError naming file and line."""
    try:
        for item in make():
            if isinstance(item, Reject) and on_error == "fail":
                where = f"{item.file}:{item.line}" if item.line else item.file
                raise KefuError(f"{where}: {item.reason}")
            yield item
    except _NotDialogues as exc:
        if unrecognised is not None:
            unrecognised(path, str(exc))
            return
        if on_error == "fail":
            raise KefuError(f"{path}: {exc}") from None
        yield Reject(str(path), None, str(exc), "")
    except _BadFile as exc:
        if on_error == "fail":
            raise KefuError(f"{path}: {exc}") from None
        yield Reject(str(path), None, str(exc), _file_head(path))
    except OSError as exc:
        if on_error == "fail":
            raise KefuError(f"{path}: cannot read: {exc.strerror or exc}") from None
        yield Reject(str(path), None, f"cannot read: {exc.strerror or exc}", "")


def _file_head(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(200)
    except OSError:
        return ""
    return head.decode("utf-8", errors="backslashreplace")


def read_dialogues(path: str | Path, format: str = "auto", on_error: str = "skip", *,
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
            return _read_dataset_info(path, progress, on_error)
        encoding = sniff_encoding(path)
        if fmt == "auto":
            fmt = detect_format(path, encoding)
            if fmt == "llamafactory":
                return _read_dataset_info(path, progress, on_error)
        suffix = path.suffix.lower()
        if fmt == "txt":
            return _read_txt(path, encoding, progress)
        if fmt == "turns" and suffix not in (".json", ".jsonl", ".ndjson"):
            return _read_table(path, encoding, progress)
        return _read_json(path, encoding, fmt, progress)

    return _guarded(path, on_error, make, unrecognised)


def _read_folder(path: Path, format: str, on_error: str, progress: Progress | None,
                 unrecognised: Callable[[Path, str], None] | None) -> Iterator[Dialogue | Reject]:
    """Every chat-log file under a folder, in a stable order; files holding no chat logs are passed over."""
    from kefu.data.pipeline import expand_inputs

    for file, _ in expand_inputs([path]):
        yield from read_dialogues(file, format, on_error, progress=progress,
                                  unrecognised=unrecognised or (lambda p, why: None))


def input_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
