"""The streaming, resumable predictions writer and the progress line."""

from __future__ import annotations

import io
import json

import pytest

from kefu.eval.predictions import PredictionWriter, Progress, read_predictions
from kefu.types import KefuError


def test_writer_flushes_each_line_and_resumes(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with PredictionWriter(path, {"data": "t.jsonl"}) as writer:
        writer.write({"id": "a", "prediction": "你好"})
        assert [r["id"] for r in read_predictions(path)] == ["a"]  # on disk before the writer closes
        writer.write({"id": "b", "prediction": "在的"})
        with pytest.raises(KefuError, match="already written"):
            writer.write({"id": "a", "prediction": "again"})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "predic')  # killed mid-line
    assert [r["id"] for r in read_predictions(path)] == ["a", "b"]
    with PredictionWriter(path, {"data": "t.jsonl"}) as writer:
        assert writer.done == {"a", "b"} and writer.resumed == 2 and "a" in writer and "c" not in writer
        writer.write({"id": "c", "prediction": "好的"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]


def test_writer_refuses_other_settings(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with PredictionWriter(path, {"data": "t.jsonl", "run": None}) as writer:
        writer.write({"id": "a", "prediction": "x"})
    with pytest.raises(KefuError, match="other settings.*run"):
        PredictionWriter(path, {"data": "t.jsonl", "run": "r1"})


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"predictions.jsonl:2"):
        list(read_predictions(path))


def test_progress_prints_plain_lines_without_a_terminal():
    stream = io.StringIO()
    with Progress(10, "eval", done=2, every_n=4, every_s=3600, stream=stream) as bar:
        for _ in range(8):
            bar.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "eval: resuming, 2/10 already done"
    assert [line.split()[1] for line in lines[1:]] == ["6/10", "10/10"]
    assert all("eta" in line for line in lines[1:])
    silent = io.StringIO()
    with Progress(3, stream=silent, enabled=False) as bar:
        bar.advance(3)
    assert silent.getvalue() == ""
