"""bench/gpu_train.py's parts that run without a GPU: the length mix it trains on and the report it writes."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "bench" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dialogue_mix_has_the_issue_s_length_distribution_and_labels_agent_turns_only():
    bench = _bench()
    examples = bench.dialogues(2000, vocab=1000, seed=0)
    lengths = sorted(len(e.input_ids) for e in examples)
    assert 230 <= lengths[len(lengths) // 2] <= 290 and lengths[-1] <= 2048 and lengths[0] >= 48
    first = examples[0]
    assert all(label == -100 for label in first.labels[:32])  # the system prompt is never supervised
    supervised = sum(e.supervised for e in examples) / sum(len(e.input_ids) for e in examples)
    assert 0.3 < supervised < 0.7


def test_report_marks_targets_from_saved_figures():
    bench = _bench()
    figures = json.loads((ROOT / "docs" / "gpu_train" / "2026-11-27-h100-run1.json").read_text())
    text = bench.section([("H100", figures)])
    rows = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): line for line in text.splitlines()
            if line.startswith("| qwen")}
    assert "❌" in rows["qwen2.5-7b kefu"] and "✅" in rows["qwen2.5-0.5b kefu"]  # 12,638 < 13,000; 75,796 >= 60,000
    assert "varlen flash, no ckpt" in rows["qwen2.5-7b kefu"] and "2.18×" in rows["qwen2.5-7b kefu"]
