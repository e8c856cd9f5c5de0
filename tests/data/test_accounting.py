"""kefu prepare accounts for every record and every input file (issue 19, "kefu prepare under-reports").

- every lost record (could not be read, or dropped by a quality filter) has one line in rejects.jsonl with its file,
  line, step and reason; duplicates are not lost (the first copy is kept) and are counted per file;
- records in = kept + rejected + filtered + duplicates, in total and for every file;
- a wholly unreadable input file (bad encoding, not JSON at all, empty, unknown format) fails the run naming every
  such file, unless --skip-bad-files: then the others are prepared and it is listed under bad_files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kefu.data.config import PrepareConfig
from kefu.data.pipeline import prepare
from kefu.types import KefuError

from .conftest import openai_rows, write_jsonl

CFG = PrepareConfig(augment=False, val_ratio=0, test_ratio=0)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dialogue(user: str, agent: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": agent}]}


GARBLED = "我的订单什么时候发货呢".encode("utf-8").decode("gbk", errors="replace")
TOO_LONG = "退货运费谁出" + "很长" * 5000  # over filters.max_chars (8000)


def good_file(path: Path) -> Path:
    """3 good dialogues, one exact duplicate, a garbled one, a too-long one, a malformed line, an unknown speaker."""
    rows = openai_rows()
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines += [json.dumps(rows[0], ensure_ascii=False),  # line 4: duplicate of line 1
              json.dumps(dialogue(GARBLED, GARBLED), ensure_ascii=False),  # line 5: garbled
              json.dumps(dialogue(TOO_LONG, "七天无理由退货，运费险赔付"), ensure_ascii=False),  # line 6: too long
              '{"messages": [',  # line 7: malformed JSON
              json.dumps({"messages": [{"role": "店长", "content": "x"}]}, ensure_ascii=False)]  # line 8
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {"encoding": folder / "latin.jsonl", "not_json": folder / "notes.json", "empty": folder / "empty.jsonl",
             "unknown_format": folder / "chats.xml"}
    files["encoding"].write_bytes(b'{"messages": "\xff\xfe\x80\x80 caf\xe9 \xff"}\n' * 3)
    files["not_json"].write_text("hello, this is not JSON\nat all\n", encoding="utf-8")
    files["empty"].write_bytes(b"")
    files["unknown_format"].write_text("<chats><chat/></chats>\n", encoding="utf-8")
    return files


def test_bad_files_fail_the_run_naming_each_and_nothing_is_written(tmp_path):
    good = good_file(tmp_path / "good.jsonl")
    bad = bad_files(tmp_path / "bad")
    out = tmp_path / "out"
    with pytest.raises(KefuError) as exc:
        prepare([good, bad["encoding"], bad["not_json"], bad["empty"]], out, CFG)
    message = str(exc.value)
    assert "3 input files cannot be read at all" in message and "--skip-bad-files" in message
    assert f"{bad['encoding']}: not valid text in UTF-8 or GBK/GB18030" in message
    assert f"{bad['not_json']}: not one usable record: all 2 rejected (line 1: malformed JSON" in message
    assert f"{bad['empty']}: empty file" in message
    assert str(good) not in message
    assert not out.exists()  # checked before anything is written
    with pytest.raises(KefuError, match=r"chats\.xml: unknown file type \.xml"):
        prepare([good, bad["unknown_format"]], out, CFG)


def test_skip_bad_files_lists_them_and_counts_only_the_readable(tmp_path):
    good = good_file(tmp_path / "good.jsonl")
    bad = bad_files(tmp_path / "bad")
    out = tmp_path / "out"
    report = prepare([good, *bad.values()], out, CFG, skip_bad_files=True)
    assert [(b["path"], b["reason"].split(" (")[0]) for b in report["bad_files"]] == [
        (str(bad["encoding"]), "not valid text in UTF-8 or GBK/GB18030"),
        (str(bad["not_json"]), "not one usable record: all 2 rejected"),
        (str(bad["empty"]), "empty file"),
        (str(bad["unknown_format"]), "unknown file type .xml")]
    # a bad file is not a record: records_in counts the 8 records of the good file only
    assert report["records_in"] == 8 and report["reconciles"] is True
    assert set(report["by_file"]) == {str(good)}
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk["bad_files"] == report["bad_files"]
    assert {r["file"] for r in read_jsonl(out / "rejects.jsonl")} == {str(good)}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Bad files" in md and "chats.xml" in md


def test_every_lost_record_has_a_line_with_its_reason(tmp_path):
    good = good_file(tmp_path / "good.jsonl")
    out = tmp_path / "out"
    report = prepare([good], out, CFG)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["file"], r["line"], r["step"], r["reason"][:14]) for r in rejects] == [
        (str(good), 5, "filter", "garbled"), (str(good), 6, "filter", "too_long"),
        (str(good), 7, "read", "malformed JSON"), (str(good), 8, "read", "unknown speake")]
    garbled, too_long = rejects[0], rejects[1]
    assert "garbled" in garbled["detail"] and "max_garbled_ratio 0.1" in garbled["detail"]
    chars = int(re.search(r"(\d+) characters", too_long["detail"]).group(1))
    assert chars > 8000 and "max_chars 8000" in too_long["detail"]
    assert too_long["raw"].startswith('[{"role": "user", "content": "退货运费谁出很长') and len(too_long["raw"]) <= 2001
    assert report["filtered"] == {"garbled": 1, "too_long": 1} and report["rejected"] == 2
    assert report["duplicates"] == 1 and report["kept"] == 3
    assert len(rejects) == report["rejected"] + sum(report["filtered"].values())


def test_counts_reconcile_per_file_and_in_total(tmp_path):
    first = good_file(tmp_path / "a.jsonl")
    second = write_jsonl(tmp_path / "b.jsonl", [*openai_rows()[1:], dialogue("?", "嗯"),  # a duplicate of a.jsonl's
                                                 dialogue("在吗在吗在吗", "在的")])           # and a too-short one
    out = tmp_path / "out"
    report = prepare([first, second], out, CFG)
    assert report["by_file"] == {
        str(first): {"records_in": 8, "kept": 3, "rejected": 2, "filtered": 2, "duplicates": 1},
        str(second): {"records_in": 4, "kept": 1, "rejected": 0, "filtered": 1, "duplicates": 2}}
    for name, f in report["by_file"].items():
        assert f["records_in"] == f["kept"] + f["rejected"] + f["filtered"] + f["duplicates"]
    for key in ("records_in", "kept", "rejected", "duplicates"):
        assert sum(f[key] for f in report["by_file"].values()) == report[key]
    assert sum(f["filtered"] for f in report["by_file"].values()) == sum(report["filtered"].values())
    assert report["records_in"] == report["kept"] + report["rejected"] + sum(report["filtered"].values()) \
        + report["duplicates"] and report["reconciles"] is True
    rejects = read_jsonl(out / "rejects.jsonl")
    written = [d for split in ("train", "val", "test") for d in read_jsonl(out / f"{split}.jsonl")]
    for name, f in report["by_file"].items():  # the counts match the files, file by file
        assert sum(r["file"] == name for r in rejects) == f["rejected"] + f["filtered"]
        assert sum(d["meta"]["source"] == name for d in written) == f["kept"]


def test_a_bad_file_in_a_folder_fails_and_a_catalogue_is_only_skipped(tmp_path):
    root = tmp_path / "shop"
    root.mkdir()
    write_jsonl(root / "chats.jsonl", openai_rows())
    (root / "products.csv").write_text("sku,name,colors\nSL-1,冲锋衣,黑色\n", encoding="utf-8")  # not chat logs
    (root / "old.jsonl").write_bytes(b"")
    with pytest.raises(KefuError, match=r"1 input file cannot be read at all[\s\S]*old\.jsonl: empty file"):
        prepare([root], tmp_path / "out", CFG)
    report = prepare([root], tmp_path / "out", CFG, skip_bad_files=True)
    assert [Path(b["path"]).name for b in report["bad_files"]] == ["old.jsonl"]
    assert [Path(s["path"]).name for s in report["skipped_files"]] == ["products.csv"] and report["kept"] == 3


def test_a_missing_file_named_by_dataset_info_is_a_bad_file(tmp_path):
    write_jsonl(tmp_path / "chats.json", openai_rows())
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "shop": {"file_name": "chats.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant"}},
        "gone": {"file_name": "missing.json"}}), encoding="utf-8")
    with pytest.raises(KefuError, match=r"dataset_info\.json: dataset 'gone': file 'missing.json' not found"):
        prepare([tmp_path / "dataset_info.json"], tmp_path / "out", CFG)
    report = prepare([tmp_path / "dataset_info.json"], tmp_path / "out", CFG, skip_bad_files=True)
    assert report["kept"] == 3 and report["reconciles"]
    assert report["bad_files"] == [{"path": str(tmp_path / "dataset_info.json"),
                                    "reason": "dataset 'gone': file 'missing.json' not found next to dataset_info.json"}]


def _kefu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "kefu"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "kefu.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_three_bad_files_and_one_good(tmp_path):
    """Through the real `kefu` command: exit non-zero naming the files; with --skip-bad-files exit 0 and say where
    every lost record is."""
    good = good_file(tmp_path / "good.jsonl")
    bad = bad_files(tmp_path / "bad")
    args = ["prepare", str(good), str(bad["encoding"]), str(bad["not_json"]), str(bad["empty"]),
            "--out", str(tmp_path / "out"), "--no-augment"]
    failed = _kefu(*args, cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr
    for name in ("latin.jsonl", "notes.json", "empty.jsonl"):
        assert name in failed.stderr
    assert "cannot be read at all" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "out").exists()
    ok = _kefu(*args, "--skip-bad-files", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert len(report["bad_files"]) == 3 and report["reconciles"]
    assert "rejected 2 (could not be read), filtered 2 (quality filters): one line each in" in ok.stderr
    assert "rejects.jsonl" in ok.stderr and "not lost: duplicates 1" in ok.stderr
    assert ok.stderr.count("bad file, not read:") == 3
