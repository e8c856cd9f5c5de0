"""JSON and JSONL logs: OpenAI ``messages``, ShareGPT ``conversations``, Alpaca instruction/output records, or rows
that are turns. JSON arrays are decoded element by element over a sliding buffer, so memory stays flat."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from kefu.data.readers.common import (BadRecord, NotDialogues, Progress, make_dialogue, raw_text, record_id,
                                      require_dict, role_of, text_of)
from kefu.data.readers.encoding import SNIFF_BYTES, open_binary, text_lines
from kefu.data.readers.table import Sessions, missing_columns, turn_columns
from kefu.types import Dialogue, Reject, Turn

MAX_JSON_ELEMENT = 64 << 20  # a single JSON array element larger than this is treated as malformed


def parse_openai(obj: Any, tags: dict[str, str] | None = None) -> list[Turn]:
    """``{"messages": [{"role", "content"}, ...]}``."""
    obj = require_dict(obj)
    tags = tags or {}
    key = tags.get("messages", "messages")
    messages = obj.get(key)
    if not isinstance(messages, list):
        raise BadRecord(f"missing field {key!r} (a list of messages)")
    role_tag, content_tag = tags.get("role_tag", "role"), tags.get("content_tag", "content")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or role_tag not in message:
            raise BadRecord(f"{key}[{i}]: missing field {role_tag!r}")
        turns.append(Turn(_mapped_role(message[role_tag], tags, f"{key}[{i}].{role_tag}"),
                          text_of(message.get(content_tag), f"{key}[{i}].{content_tag}")))
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
    return role_of(value, where)


def parse_sharegpt(obj: Any, tags: dict[str, str] | None = None) -> list[Turn]:
    """``{"conversations": [{"from": "human"|"gpt"|"system"|..., "value"}], "system"?: ...}``."""
    obj = require_dict(obj)
    tags = dict(tags or {})
    key = tags.get("messages") or ("conversations" if "conversations" in obj else "messages")
    tags.setdefault("role_tag", "from")
    tags.setdefault("content_tag", "value")
    if key not in obj:
        raise BadRecord(f"missing field {key!r} (a list of turns)")
    return parse_openai(obj, {**tags, "messages": key})


def parse_alpaca(obj: Any, columns: dict[str, str] | None = None) -> list[Turn]:
    """``{"instruction", "input"?, "output", "history"?: [[q, a], ...], "system"?}``."""
    obj = require_dict(obj)
    columns = columns or {}
    prompt_key, query_key = columns.get("prompt", "instruction"), columns.get("query", "input")
    response_key, history_key = columns.get("response", "output"), columns.get("history", "history")
    system_key = columns.get("system", "system")
    if prompt_key not in obj:
        raise BadRecord(f"missing field {prompt_key!r}")
    if response_key not in obj:
        raise BadRecord(f"missing field {response_key!r}")
    turns: list[Turn] = []
    system = obj.get(system_key)
    if isinstance(system, str) and system.strip():
        turns.append(Turn("system", system))
    history = obj.get(history_key) or []
    if not isinstance(history, list):
        raise BadRecord(f"{history_key!r} must be a list of [question, answer] pairs")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRecord(f"{history_key}[{i}] must be a [question, answer] pair")
        turns.append(Turn("user", text_of(pair[0], f"{history_key}[{i}][0]")))
        turns.append(Turn("assistant", text_of(pair[1], f"{history_key}[{i}][1]")))
    prompt = text_of(obj.get(prompt_key), prompt_key)
    query = text_of(obj.get(query_key), query_key)
    turns.append(Turn("user", f"{prompt}\n{query}" if prompt and query else prompt or query))
    response = obj.get(response_key)
    if isinstance(response, list):  # ranking data: [chosen, rejected]
        response = response[0] if response else ""
    turns.append(Turn("assistant", text_of(response, response_key)))
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
    if turn_columns([str(k) for k in obj]) is not None:
        return "turns"
    return None


def _iter_json_array(text: io.TextIOBase, path: Path) -> Iterator[tuple[int, Any] | tuple[int, BadRecord]]:
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
        yield line, BadRecord("expected a JSON array")
        return
    pos += 1
    expect_value = True
    while True:
        ch = skip_ws()
        if ch == "":
            yield line, BadRecord("unexpected end of file inside the JSON array (truncated?)")
            return
        if ch == "]":
            return
        if not expect_value:
            if ch != ",":
                yield line, BadRecord(f"expected ',' or ']' between array elements, found {ch!r}")
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
                    yield line, BadRecord(f"malformed JSON: {exc.msg} (line {line + buf.count(chr(10), pos, exc.pos)})")
                    return
            if not fill():
                continue
        start_line = line
        line += buf.count("\n", pos, end)
        pos = end
        expect_value = False
        yield start_line, obj


def sniff_json_container(path: Path, encoding: str) -> str:
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
                   ) -> Iterator[tuple[int, Any, str] | tuple[int, BadRecord, str]]:
    """(line, parsed value or BadRecord, raw text) for each record of a JSON/JSONL file."""
    container = sniff_json_container(path, encoding)
    if container == "array":
        codec = "utf-8-sig" if encoding == "utf-8" else encoding
        with open_binary(path, progress) as raw, io.TextIOWrapper(raw, encoding=codec, errors="strict") as text:
            try:
                for line, value in _iter_json_array(text, path):
                    yield line, value, "" if not isinstance(value, BadRecord) else ""
            except UnicodeDecodeError as exc:
                yield 0, BadRecord(f"not valid {encoding}: {exc.reason}"), ""
        return
    if container == "object":
        with open_binary(path, progress) as raw:
            data = raw.read().decode(encoding if encoding != "utf-8" else "utf-8-sig")
        value = json.loads(data)
        items = value.get("data") if isinstance(value.get("data"), list) else [value]
        for item in items:
            yield 1, item, ""
        return
    for number, text, raw in text_lines(path, encoding, progress):
        if text is None:
            yield number, BadRecord(f"not valid {encoding}"), raw_text(raw)
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), text
        except json.JSONDecodeError as exc:
            yield number, BadRecord(f"malformed JSON: {exc.msg} at column {exc.colno}"), raw_text(text)


def read_json(path: Path, encoding: str, fmt: str, progress: Progress | None,
               mapping: dict[str, Any] | None = None, source: str | None = None
               ) -> Iterator[Dialogue | Reject]:
    source = source or str(path)
    mapping = mapping or {}
    columns, tags = mapping.get("columns") or {}, mapping.get("tags") or {}
    schema = None if fmt == "auto" else fmt
    sessions: Sessions | None = None
    turn_cols: tuple[str, str, str] | None = None
    first = True
    for line, value, raw in _json_elements(path, encoding, progress):
        if isinstance(value, BadRecord):
            yield Reject(source, line or None, str(value), raw)
            continue
        if schema is None:
            schema = schema_of(value)
            if schema is None:
                if first:
                    raise NotDialogues(f"line {line}: records are not chat logs (no messages/conversations/"
                                        f"instruction+output/session+speaker+content fields)")
                schema = "openai"
        first = False
        raw = raw or raw_text(json.dumps(value, ensure_ascii=False))
        try:
            if schema == "turns":
                obj = require_dict(value)
                keys = [str(k) for k in obj]
                cols = turn_columns(keys)
                if cols is None:
                    raise BadRecord(f"missing column(s) {', '.join(missing_columns(keys))}")
                turn_cols = (keys[cols[0]], keys[cols[1]], keys[cols[2]])
                sessions = sessions or Sessions(source)
                done = sessions.add(str(obj[turn_cols[0]]), role_of(obj[turn_cols[1]], turn_cols[1]),
                                    text_of(obj[turn_cols[2]], turn_cols[2]), line)
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
        except BadRecord as exc:
            yield Reject(source, line, str(exc), raw)
            continue
        extra = value.get("meta") if isinstance(value.get("meta"), dict) else None
        yield make_dialogue(turns, source, line, record_id(value), extra)
    if sessions is not None:
        last = sessions.flush()
        if last is not None:
            yield last

