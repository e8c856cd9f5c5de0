"""Small fixtures for the data-stage tests: chat logs written in every format the readers accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DIALOGUES = [
    [("user", "请问XL码的黑色冲锋衣还有货吗"), ("assistant", "亲，XL码黑色有现货的，今天下单明天发货"),
     ("user", "多少钱"), ("assistant", "到手价599元，满300减50")],
    [("user", "我的订单什么时候发货，手机号13812345678"), ("assistant", "已帮您催促仓库，预计明天发出，发顺丰速运")],
    [("user", "退款什么时候到账"), ("assistant", "退款已原路退回，一般1-3个工作日到账")],
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def openai_rows(dialogues=DIALOGUES) -> list[dict]:
    return [{"id": f"d{i}", "messages": [{"role": r, "content": c} for r, c in d]} for i, d in enumerate(dialogues)]


@pytest.fixture
def openai_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chats.jsonl", openai_rows())
