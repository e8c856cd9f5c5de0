"""What every raw-log reader shares: record problems, speaker names, turning parsed turns into a Dialogue, and
turning file-level problems into one Reject (or a KefuError under ``on_error="fail"``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from kefu.types import Dialogue, KefuError, Reject, Turn

DATA_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt"}
RAW_LIMIT = 2000  # characters of the offending input kept in rejects.jsonl

Progress = Callable[[int], None]

# Speaker names seen in real logs -> role. Keys are lower-case.
ROLE_ALIASES: dict[str, str] = {
    **dict.fromkeys(["user", "human", "customer", "buyer", "client", "q", "question", "顾客", "用户", "买家", "客户",
                     "访客", "0", "customer_send", "observation", "function", "tool"], "user"),
    **dict.fromkeys(["assistant", "gpt", "agent", "bot", "seller", "staff", "waiter", "a", "answer", "model",
                     "客服", "卖家", "商家", "店家", "店小二", "人工客服", "机器人", "1", "function_call"], "assistant"),
    **dict.fromkeys(["system", "系统", "系统消息"], "system"),
}


@dataclass(slots=True)
class FileReject(Reject):
    """A Reject for a whole input file (empty, binary, wrong encoding, unknown format, unreadable, an unusable
    dataset_info entry): not a record. ``kefu prepare`` fails on it, or lists it under ``bad_files``."""


class BadRecord(Exception):
    """A record that cannot be used; becomes a Reject (or a KefuError under on_error="fail")."""


class BadFile(Exception):
    """The whole file cannot be used (empty, binary, unknown encoding, no usable columns)."""


class NotDialogues(Exception):
    """Valid data, but not chat logs (e.g. a product catalogue found while walking a folder)."""


def raw_text(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


def role_of(value: Any, where: str) -> str:
    role = ROLE_ALIASES.get(str(value).strip().lower())
    if role is None:
        raise BadRecord(f"unknown speaker {value!r} in {where}")
    return role


def text_of(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):  # OpenAI content parts
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in value]
        return "".join(p for p in parts if isinstance(p, str))
    raise BadRecord(f"{where} must be text, got {type(value).__name__}")


def require_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def record_id(obj: dict[str, Any]) -> str | None:
    for key in ("id", "dialogue_id", "conversation_id", "session_id", "uuid"):
        value = obj.get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def make_dialogue(turns: list[Turn], source: str, line: int, dialogue_id: str | None,
                  extra: dict[str, Any] | None = None) -> Dialogue:
    """A raw dialogue with ``meta.source``/``meta.line``; without an id it is named after its file and line."""
    meta: dict[str, Any] = dict(extra) if extra else {}
    meta["source"] = source
    meta["line"] = line
    return Dialogue(id=dialogue_id or f"{Path(source).name}:{line}", messages=turns, meta=meta)


def guarded(path: Path, on_error: str, make: Callable[[], Iterable[Dialogue | Reject]],
            unrecognised: Callable[[Path, str], None] | None = None) -> Iterator[Dialogue | Reject]:
    """Turn file-level problems into one FileReject; under on_error="fail" raise KefuError naming file and line."""
    try:
        for item in make():
            if isinstance(item, Reject) and on_error == "fail":
                where = f"{item.file}:{item.line}" if item.line else item.file
                raise KefuError(f"{where}: {item.reason}")
            yield item
    except NotDialogues as exc:
        if unrecognised is not None:
            unrecognised(path, str(exc))
            return
        if on_error == "fail":
            raise KefuError(f"{path}: {exc}") from None
        yield FileReject(str(path), None, str(exc), "")
    except BadFile as exc:
        if on_error == "fail":
            raise KefuError(f"{path}: {exc}") from None
        yield FileReject(str(path), None, str(exc), _file_head(path))
    except OSError as exc:
        if on_error == "fail":
            raise KefuError(f"{path}: cannot read: {exc.strerror or exc}") from None
        yield FileReject(str(path), None, f"cannot read: {exc.strerror or exc}", "")


def _file_head(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(200)
    except OSError:
        return ""
    return head.decode("utf-8", errors="backslashreplace")

