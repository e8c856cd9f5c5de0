import json
from datetime import datetime, timedelta, timezone

from kefu.loop.analyze import analyze, classify, write_report
from kefu.loop.dataset import build_dataset
from kefu.loop.feedback import FeedbackRecord
from kefu.testing import write_jsonl

Q_PRICE = {"role": "user", "content": "这件冲锋衣多少钱？"}
A_WRONG = {"role": "assistant", "content": "亲，这款399元。"}


def _rec(i, kind, **kw):
    return FeedbackRecord(kind=kind, id=i, created_at=datetime(2026, 11, 2, tzinfo=timezone.utc) + timedelta(days=i),
                          **kw)


def test_classify_each_failure_type():
    assert classify(_rec(1, "correction", correction="亲，这款459元。", conversation=[Q_PRICE, A_WRONG])) == "wrong_fact"
    assert classify(_rec(2, "correction", correction="亲，这款卖399元哦。", conversation=[Q_PRICE, A_WRONG])) == "corrected"
    superlative = [Q_PRICE, {"role": "assistant", "content": "这是全网最好的冲锋衣，绝对第一！"}]
    assert classify(_rec(3, "rating", rating=5, conversation=superlative)) == "non_compliant"
    assert classify(_rec(4, "handoff", outcome="unresolved", conversation=[Q_PRICE])) == "unresolved"
    assert classify(_rec(5, "handoff", outcome="escalated", conversation=[Q_PRICE])) == "handed_off"
    assert classify(_rec(6, "rating", rating=-1, conversation=[Q_PRICE, A_WRONG])) == "unresolved"
    assert classify(_rec(7, "rating", rating=5, conversation=[Q_PRICE, A_WRONG])) == "ok"


def test_analyze_groups_and_report(tmp_path):
    records = [_rec(i, "correction", correction="亲，这款459元。", conversation=[Q_PRICE, A_WRONG]) for i in range(4)]
    records += [_rec(10 + i, "rating", rating=5, conversation=[Q_PRICE, A_WRONG]) for i in range(4)]
    result = analyze(records)
    assert result["records"] == 8 and result["failures"] == 4
    assert result["by_failure_type"]["wrong_fact"] == 4
    top = result["top_reasons"][0]
    assert top["failure"] == "wrong_fact" and top["count"] == 4 and len(top["examples"]) == 3
    assert sum(sum(week.values()) for week in result["trend"].values()) == 8
    page = write_report(result, tmp_path)
    assert "<svg" in page.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "analysis.json").read_text())["failures"] == 4


def test_dataset_uses_corrections_masks_and_dedups(tmp_path):
    old = write_jsonl(tmp_path / "old.jsonl", [{"id": "o1", "messages": [Q_PRICE, {"role": "assistant", "content": "亲，这款459元。"}]}])
    records = [
        _rec(1, "correction", correction="亲，这款459元。", conversation=[Q_PRICE, A_WRONG]),  # already known
        _rec(2, "correction", correction="好的，已登记，联系电话13812345678。",
             conversation=[{"role": "user", "content": "帮我登记退货"}, {"role": "assistant", "content": "不行"}]),
        _rec(3, "rating", rating=5, conversation=[Q_PRICE, A_WRONG]),  # nothing to learn
    ]
    counts = build_dataset(records, tmp_path / "new", previous=[old])
    assert counts == {"feedback": 3, "usable": 2, "duplicates": 1, "kept": 1, "previous": 1}
    lines = (tmp_path / "new" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    kept = json.loads(lines[0])
    assert kept["messages"][-1]["content"].startswith("好的，已登记") and "13812345678" not in lines[0]
    assert kept["meta"]["tier"] == 2 and kept["meta"]["source"] == "feedback"
