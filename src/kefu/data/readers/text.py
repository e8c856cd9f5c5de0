"""Speaker-prefixed TXT logs (``顾客：...`` / ``客服：...``, a blank line between dialogues)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from kefu.data.readers.common import ROLE_ALIASES, NotDialogues, Progress, make_dialogue, raw_text
from kefu.data.readers.encoding import text_lines
from kefu.types import Dialogue, Reject, Turn

TXT_PREFIX = re.compile(
    r"^\s*(顾客|客服|用户|买家|卖家|客户|商家|系统|user|assistant|system|customer|agent|human|bot|q|a)\s*[:：]\s?(.*)$",
    re.I)


def read_txt(path: Path, encoding: str, progress: Progress | None) -> Iterator[Dialogue | Reject]:
    """Speaker-prefixed lines; a line without a prefix continues the previous turn; a blank line ends a dialogue."""
    source = str(path)
    turns: list[Turn] = []
    start = 0
    seen_prefix = False
    for number, text, raw in text_lines(path, encoding, progress):
        if text is None:
            yield Reject(source, number, f"not valid {encoding}", raw_text(raw))
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            if turns:
                yield make_dialogue(turns, source, start, None)
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
                raise NotDialogues("no speaker-prefixed lines (顾客：/客服：/User:/Assistant: ...) in the first 50 lines")
            yield Reject(source, number, "line has no speaker prefix (顾客：/客服：/User:/Assistant: ...) and "
                                         "does not continue a turn", raw_text(text))
    if turns:
        yield make_dialogue(turns, source, start, None)

