"""Retrieval and stock-reply baselines (kefu.eval.baseline) and their place in `kefu eval`."""

from __future__ import annotations

import json

import pytest
import yaml

from kefu.eval.baseline import baseline_metrics, retrieval_predictions, stock_predictions, train_data_of_run
from kefu.eval.config import EvalConfig
from kefu.eval.metrics import lf_bleu4
from kefu.eval.records import load_test_samples
from kefu.eval.runner import evaluate, reply_index_for
from kefu.kg.replies import ReplyIndex
from kefu.types import KefuError

from _tiny import DIALOGUES, make_model, make_tokenizer, write_jsonl

TRAIN = [
    {"id": "t1", "messages": [{"role": "user", "content": "你好在吗"}, {"role": "assistant", "content": "亲，在的"},
                              {"role": "user", "content": "什么时候发货呀"},
                              {"role": "assistant", "content": "亲，48小时内发货。"}]},
    {"id": "t2", "messages": [{"role": "user", "content": "冲锋衣可以退吗"},
                              {"role": "assistant", "content": "支持7天无理由退货，吊牌完好即可。"}]},
    {"id": "t3", "messages": [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "亲，在的"}]},
    {"id": "t4", "messages": [{"role": "user", "content": "满减怎么算"},
                              {"role": "assistant", "content": "满300元减50元，可以和店铺券叠加。"}]},
]


@pytest.fixture
def train_file(tmp_path):
    return write_jsonl(tmp_path / "data" / "train.jsonl", TRAIN)


def test_retrieval_and_stock_predictions(tmp_path, train_file):
    index = ReplyIndex.from_data(train_file.parent)
    samples = load_test_samples(write_jsonl(tmp_path / "test.jsonl", DIALOGUES))
    preds = retrieval_predictions(index, samples)
    assert len(preds) == len(samples) == 5
    by_id = dict(zip((s["id"] for s in samples), preds))
    assert by_id["d1#3"] == "亲，48小时内发货。" and by_id["d2#1"] == "支持7天无理由退货，吊牌完好即可。"
    assert by_id["d3#2"] == "满300元减50元，可以和店铺券叠加。"
    assert stock_predictions(index, samples) == ["亲，在的"] * 5  # the most frequent agent reply
    metrics, retrieved = baseline_metrics(index, samples, {"bleu4": 50.0, "rougeL": 40.0})
    assert retrieved == preds
    expected = sum(lf_bleu4(p, s["references"]) for p, s in zip(preds, samples)) / len(samples)
    assert metrics["retrieval_bleu4"] == pytest.approx(expected)
    assert metrics["vs_retrieval_bleu4"] == pytest.approx(50.0 / expected)
    assert metrics["stock_reply"] == "亲，在的" and 0 <= metrics["stock_bleu4"] < metrics["retrieval_bleu4"]
    assert metrics["vs_stock_rougeL"] == pytest.approx(40.0 / metrics["stock_rougeL"])
    assert metrics["retrieval_matched_rate"] == 0.8 and by_id["d4#1"] == ""  # 转人工 shares no term with train
    no_model, _ = baseline_metrics(index, samples)
    assert "vs_retrieval_bleu4" not in no_model


def test_train_data_from_the_run_record(tmp_path, train_file):
    run = tmp_path / "run"
    run.mkdir()
    assert train_data_of_run(run) is None  # no record
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"model": "m"}, "data": {
        "path": str(train_file.parent), "files": [str(train_file), str(tmp_path / "val.jsonl")]}}), encoding="utf-8")
    assert train_data_of_run(run) == train_file
    index, path = reply_index_for(None, run)
    assert path == train_file and len(index) == 5
    assert reply_index_for(None, None) == (None, None)
    with pytest.raises(KefuError, match="not found"):
        reply_index_for(tmp_path / "missing", None)


def test_evaluate_reports_baselines_beside_the_model(tmp_path, train_file):
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    tok = make_tokenizer()
    out = tmp_path / "eval"
    cfg = EvalConfig(batch_size=2, max_new_tokens=4, perplexity=False)
    metrics = evaluate(data, out, model_obj=make_model(tok), tokenizer=tok, config=cfg, progress=False,
                       train_data=train_file.parent)
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("retrieval_bleu4", "retrieval_rougeL", "stock_bleu4", "stock_rougeL", "vs_retrieval_bleu4",
                "vs_stock_bleu4"):
        assert key in saved and key in metrics, key
    assert saved["retrieval_bleu4"] > 50 and saved["retrieval_train_data"] == str(train_file.parent)
    assert saved["vs_retrieval_bleu4"] == pytest.approx(saved["bleu4"] / saved["retrieval_bleu4"])
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1]["retrieval"] == "亲，48小时内发货。"
    # without train data (no run record either) the baselines are simply absent
    plain = evaluate(data, tmp_path / "plain", model_obj=make_model(tok), tokenizer=tok, config=cfg, progress=False)
    assert "retrieval_bleu4" not in plain and plain["retrieval_train_data"] is None
