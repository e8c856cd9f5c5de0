"""The prepared-dialogue JSONL owner: round trip, folder resolution, errors naming file and line."""

import pytest

from kefu.artifacts.dialogues import (dialogue_line, iter_jsonl, prepared_file, read_dialogues, write_dialogues,
                                      write_jsonl)
from kefu.types import Dialogue, KefuError, Turn


def _dialogue(i: int) -> Dialogue:
    return Dialogue(f"d{i}", [Turn("user", "有M码吗"), Turn("assistant", "有的亲")], {"intents": ["size"], "tier": 1})


def test_round_trip_and_folder_means_train_jsonl(tmp_path):
    assert write_dialogues(tmp_path / "data" / "train.jsonl", [_dialogue(0), _dialogue(1)]) == 2
    first = (tmp_path / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert first == dialogue_line(_dialogue(0)) and "有M码吗" in first and ", " not in first
    lines = list(read_dialogues(tmp_path / "data"))
    assert [p.dialogue for p in lines] == [_dialogue(0), _dialogue(1)]
    assert lines[1].where == f"{tmp_path / 'data' / 'train.jsonl'}:2"
    with pytest.raises(KefuError, match="no test.jsonl in this folder"):
        prepared_file(tmp_path / "data", "test.jsonl")
    with pytest.raises(KefuError, match="is a folder"):
        list(read_dialogues(tmp_path / "data", name=None))


def test_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": []}\n\n{oops\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"bad.jsonl:3: not valid JSON"):
        list(read_dialogues(bad))
    bad.write_text('{"id": "a", "messages": [{"role": "agent", "content": "x"}]}\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"bad.jsonl:1: messages\[0\] needs role"):
        list(read_dialogues(bad))
    bad.write_text('[1]\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"bad.jsonl:1: expected a JSON object, got list"):
        list(read_dialogues(bad))
    bad.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"bad.jsonl:1: field 'messages' must be a list"):
        list(read_dialogues(bad))
    bad.write_text("\n", encoding="utf-8")
    assert list(read_dialogues(bad)) == []
    with pytest.raises(KefuError, match="empty file"):
        list(read_dialogues(bad, empty_ok=False))
    with pytest.raises(KefuError, match="file not found"):
        list(read_dialogues(tmp_path / "missing.jsonl"))


def test_generic_rows(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "rows.jsonl", [{"id": 1, "text": "你好", "path": tmp_path}])
    assert [obj for _, obj in iter_jsonl(path)] == [{"id": 1, "text": "你好", "path": str(tmp_path)}]
