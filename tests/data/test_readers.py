"""Every reader and format, encodings, and each kind of bad input under skip and fail."""

from __future__ import annotations

import json

import pytest

from kefu.data import readers
from kefu.data.readers import expand_inputs, read_logs
from kefu.data.readers.dataset_info import dataset_info_files, resolve_dataset_info
from kefu.data.readers.encoding import sniff_encoding
from kefu.types import Dialogue, KefuError, Reject

from .conftest import DIALOGUES, openai_rows, write_jsonl


def pairs(d: Dialogue) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in d.messages]


def split(items):
    items = list(items)
    dialogues = [i for i in items if isinstance(i, Dialogue)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return dialogues, rejects


def test_openai_jsonl_keeps_source_line_and_id(openai_jsonl):
    dialogues, rejects = split(read_logs(openai_jsonl))
    assert not rejects
    assert [pairs(d) for d in dialogues] == DIALOGUES
    assert [d.meta["line"] for d in dialogues] == [1, 2, 3]
    assert dialogues[0].meta["source"] == str(openai_jsonl) and dialogues[0].id == "d0"


def test_openai_json_array_streams_across_small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "SNIFF_BYTES", 16)  # elements straddle many buffer refills
    rows = openai_rows() * 20
    path = tmp_path / "chats.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    dialogues, rejects = split(read_logs(path))
    assert not rejects and len(dialogues) == 60
    assert [pairs(d) for d in dialogues[:3]] == DIALOGUES
    text_lines = path.read_text(encoding="utf-8").splitlines()
    for d in dialogues[:5]:  # the recorded line is where the element starts
        assert text_lines[d.meta["line"] - 1].strip() == "{"


def test_read_logs_is_lazy(openai_jsonl):
    stream = read_logs(openai_jsonl)
    assert iter(stream) is stream
    assert isinstance(next(stream), Dialogue)


def test_sharegpt_with_system(tmp_path):
    rows = [{"system": "你是山岚户外的客服", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            for (_, q), (_, a) in (d[:2] for d in DIALOGUES)]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    dialogues, rejects = split(read_logs(path))
    assert not rejects
    assert pairs(dialogues[0])[0] == ("system", "你是山岚户外的客服")
    assert pairs(dialogues[1])[1:] == DIALOGUES[1]


def test_alpaca_with_history(tmp_path):
    d = DIALOGUES[0]
    row = {"instruction": d[2][1], "input": "", "output": d[3][1], "history": [[d[0][1], d[1][1]]], "system": "客服"}
    path = write_jsonl(tmp_path / "alpaca.jsonl", [row])
    (dialogue,), _ = split(read_logs(path, format="alpaca"))
    assert pairs(dialogue) == [("system", "客服"), *d]


def test_dataset_info_mapping_reads_pointed_files(tmp_path):
    (tmp_path / "custom.json").write_text(json.dumps([
        {"dialog": [{"speaker": "customer", "text": "在吗，有42码吗"}, {"speaker": "agent", "text": "有的"}]}],
        ensure_ascii=False), encoding="utf-8")
    (tmp_path / "qa.json").write_text(json.dumps([{"q": "包邮吗", "a": "全场包邮"}], ensure_ascii=False),
                                      encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "shop_sg": {"file_name": "custom.json", "formatting": "sharegpt", "columns": {"messages": "dialog"},
                    "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer",
                             "assistant_tag": "agent"}},
        "shop_qa": {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a"}},
        "remote": {"hf_hub_url": "someone/data"},
    }), encoding="utf-8")
    dialogues, rejects = split(read_logs(tmp_path / "dataset_info.json"))
    assert [pairs(d) for d in dialogues] == [[("user", "在吗，有42码吗"), ("assistant", "有的")],
                                             [("user", "包邮吗"), ("assistant", "全场包邮")]]
    assert dialogues[0].meta["source"].endswith("custom.json")
    assert len(rejects) == 1 and "hf_hub_url" in rejects[0].reason, rejects


def test_dataset_info_resolves_once_for_reading_and_for_the_walk(tmp_path):
    """One resolver: a folder entry means its data files, remote/odd entries carry their problem, and the files a
    folder walk must not read twice are exactly the ones read through it."""
    (tmp_path / "logs").mkdir()
    write_jsonl(tmp_path / "logs" / "b.jsonl", openai_rows()[1:])
    write_jsonl(tmp_path / "logs" / "a.jsonl", openai_rows()[:1])
    (tmp_path / "logs" / "notes.md").write_text("not data", encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "chats": {"file_name": "logs", "formatting": "openai"},
        "odd": {"file_name": "logs/a.jsonl", "formatting": "xml"},
        "gone": {"file_name": "missing.json"},
    }), encoding="utf-8")
    entries = resolve_dataset_info(tmp_path / "dataset_info.json")
    assert [(e.name, [f.name for f in e.files], e.problem is None) for e in entries] == [
        ("chats", ["a.jsonl", "b.jsonl"], True), ("odd", ["a.jsonl"], False), ("gone", [], False)]
    assert "unsupported formatting" in entries[1].problem and "not found" in entries[2].problem
    assert {f.name for f in dataset_info_files(tmp_path / "dataset_info.json")} == {"a.jsonl", "b.jsonl"}
    assert [p.name for p, _ in expand_inputs([tmp_path])] == ["dataset_info.json"]
    dialogues, rejects = split(read_logs(tmp_path))
    assert [pairs(d) for d in dialogues] == DIALOGUES and len(rejects) == 2


def test_turn_table_csv_with_chinese_header_and_gbk(tmp_path):
    rows = ["会话ID,角色,内容"]
    for i, d in enumerate(DIALOGUES):
        rows += [f"s{i},{'顾客' if r == 'user' else '客服'},\"{c}\"" for r, c in d]
    path = tmp_path / "turns.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("gbk"))
    dialogues, rejects = split(read_logs(path))
    assert not rejects
    assert [pairs(d) for d in dialogues] == DIALOGUES
    assert [d.id for d in dialogues] == ["s0", "s1", "s2"] and dialogues[1].meta["line"] == 6


def test_turn_rows_as_jsonl(tmp_path):
    rows = [{"session_id": f"s{i}", "speaker": "user" if r == "user" else "assistant", "content": c}
            for i, d in enumerate(DIALOGUES) for r, c in d]
    dialogues, _ = split(read_logs(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert [pairs(d) for d in dialogues] == DIALOGUES


def test_jddc_style_tsv_without_header(tmp_path):
    lines = ["a1\tU1\t0\t0\t0\tnan\t你好", "a1\tU1\t0\t0\t0\tnan\t订单什么时候发货",
             "a1\tU1\t1\t0\t0\tnan\t您好!@@@!已为您催促仓库", "b2\tU2\t0\t0\t0\t123\t有发票吗", "b2\tU2\t1\t0\t0\t123\t有的"]
    path = tmp_path / "chat.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dialogues, rejects = split(read_logs(path))
    assert not rejects and [d.id for d in dialogues] == ["a1", "b2"]
    assert pairs(dialogues[0]) == [("user", "你好"), ("user", "订单什么时候发货"), ("assistant", "您好"),
                                   ("assistant", "已为您催促仓库")]
    assert dialogues[1].meta["line"] == 4


def test_txt_speaker_prefixed_with_bom(tmp_path):
    text = "顾客：XL码有货吗\n客服：有的\n亲，今天发货\n\nUser: 包邮吗\nAssistant: 包邮\n"
    path = tmp_path / "chat.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    dialogues, rejects = split(read_logs(path))
    assert not rejects
    assert pairs(dialogues[0]) == [("user", "XL码有货吗"), ("assistant", "有的\n亲，今天发货")]
    assert pairs(dialogues[1]) == [("user", "包邮吗"), ("assistant", "包邮")]
    assert [d.meta["line"] for d in dialogues] == [1, 5]


def test_jddc_sample(shared_data):
    path = shared_data / "jddc2019" / "chat_0.1per.txt"
    dialogues, rejects = split(read_logs(path))
    assert not rejects and len(dialogues) == 994  # 994 sessions in the sample
    assert sum(len(d.messages) for d in dialogues) >= 12136  # !@@@! splits add turns, none are lost
    assert pairs(dialogues[0])[:2] == [("user", "人工客服 京东快递(移动端) 你好"), ("assistant", "有什么问题我可以帮您处理或解决呢?")]


# ------------------------------------------------------------------------------------------------ bad input

def _bad_inputs(tmp_path):
    good = json.dumps(openai_rows()[0], ensure_ascii=False)
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(good + "\n{\"messages\": [\n" + good + "\n", encoding="utf-8")
    wrong_encoding = tmp_path / "latin.jsonl"
    wrong_encoding.write_bytes((good + "\n").encode("utf-8") * 3000 + b'{"messages": "caf\xe9"}\n')
    missing = tmp_path / "missing.csv"
    missing.write_text("session_id,speaker\ns1,顾客\n", encoding="utf-8")
    short_row = tmp_path / "short.csv"
    short_row.write_text("session_id,speaker,content\ns1,顾客,在吗\ns1,客服\ns1,客服,在的\n", encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    undecodable = tmp_path / "undecodable.txt"
    undecodable.write_bytes(b"\x81\x20\xff\xfe\x80" * 50)
    no_messages = write_jsonl(tmp_path / "nomsg.jsonl", [openai_rows()[0], {"id": "x", "messages": "hi"}])
    return {"malformed": (malformed, 2, "malformed JSON"), "wrong_encoding": (wrong_encoding, 3001, "not valid utf-8"),
            "missing_column": (missing, None, "missing column(s) content"),
            "short_row": (short_row, 3, "row has 2 field(s)"), "empty": (empty, None, "empty file"),
            "binary": (binary, None, "binary file"), "undecodable": (undecodable, None, "wrong encoding"),
            "not_a_list": (no_messages, 2, "missing field 'messages'")}


@pytest.mark.parametrize("case", ["malformed", "wrong_encoding", "missing_column", "short_row", "empty", "binary",
                                  "undecodable", "not_a_list"])
def test_bad_input_skip_and_fail(tmp_path, case):
    path, line, reason = _bad_inputs(tmp_path)[case]
    items = list(read_logs(path, on_error="skip"))
    _, rejects = split(items)
    assert len(rejects) == 1, rejects
    assert rejects[0].file == str(path) and rejects[0].line == line and reason in rejects[0].reason
    with pytest.raises(KefuError) as err:
        list(read_logs(path, on_error="fail"))
    where = f"{path}:{line}" if line else str(path)
    assert str(err.value).startswith(where) and reason in str(err.value)


def test_good_records_around_a_bad_line_survive(tmp_path):
    path, _, _ = _bad_inputs(tmp_path)["malformed"]
    dialogues, rejects = split(read_logs(path))
    assert [d.meta["line"] for d in dialogues] == [1, 3] and rejects[0].raw.startswith('{"messages"')


def test_forced_format_and_unknown_format(openai_jsonl):
    _, rejects = split(read_logs(openai_jsonl, format="alpaca"))
    assert len(rejects) == 3 and "instruction" in rejects[0].reason
    with pytest.raises(KefuError, match="unknown format"):
        read_logs(openai_jsonl, format="xml")


def test_detect_format(tmp_path, openai_jsonl):
    assert readers.detect_format(openai_jsonl) == "auto"
    p = tmp_path / "a.txt"
    p.write_text("顾客：你好\n客服：您好\n", encoding="utf-8")
    assert readers.detect_format(p) == "txt"
    assert sniff_encoding(p) == "utf-8"
    p.write_bytes("顾客：你好\n".encode("gbk"))
    assert sniff_encoding(p) == "gb18030"


def test_read_a_folder(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", openai_rows())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("顾客：在吗\n客服：在的\n", encoding="utf-8")
    (tmp_path / "products.csv").write_text("sku,name\nSL-1,冲锋衣\n", encoding="utf-8")
    skipped = []
    dialogues, rejects = split(read_logs(tmp_path, unrecognised=lambda p, why: skipped.append(p.name)))
    assert len(dialogues) == 4 and not rejects and skipped == ["products.csv"]


def test_json_object_documents(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(openai_rows()[0], ensure_ascii=False, indent=2), encoding="utf-8")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": openai_rows()}, ensure_ascii=False, indent=2), encoding="utf-8")
    assert [pairs(d) for d in split(read_logs(one))[0]] == DIALOGUES[:1]
    assert [pairs(d) for d in split(read_logs(wrapped))[0]] == DIALOGUES
