"""End to end: `kefu eval` on a test split (tiny model / fake endpoint), `eval score`, `eval compare`, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.eval import runner as eval_runner
from kefu.eval.compare import compare
from kefu.eval.config import EvalConfig
from kefu.eval.records import load_predictions, load_test_samples
from kefu.artifacts.run import TrainRun
from kefu.eval.runner import evaluate
from kefu.types import KefuError

from _tiny import DIALOGUES, make_model, make_tokenizer, write_jsonl


def test_samples_from_test_split(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    samples = load_test_samples(path)
    assert [s["id"] for s in samples] == ["d1#1", "d1#3", "d2#1", "d3#2", "d4#1"]
    assert [s["intent"] for s in samples] == ["greeting", "order_status", "return_request", "promotion_inquiry",
                                              "human_handoff"]
    assert samples[1]["context"] == DIALOGUES[0]["messages"][:3]
    assert samples[3]["references"] == ["满300元减50元，可以和店铺券叠加。", "满300减50哦"]  # <sep> alternatives
    assert samples[2]["facts"] == [{"type": "days", "value": 7}]  # the reference states it, so the turn needs it
    assert "facts" not in samples[0]
    last = load_test_samples(path, last_turn_only=True)
    assert [s["id"] for s in last] == ["d1#3", "d2#1", "d3#2", "d4#1"]
    assert len(load_test_samples(path, max_samples=2)) == 2


def test_evaluate_local_model_writes_everything(tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    tok = make_tokenizer()
    out = tmp_path / "eval"
    cfg = EvalConfig(batch_size=2, max_new_tokens=6)
    metrics = evaluate(data, out, model_obj=make_model(tok), tokenizer=tok, config=cfg, progress=False)
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["n_samples"] == 5 == metrics["n_samples"]
    for key in ("bleu4", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf", "resolution_rate", "handoff_rate",
                "latency_p50_ms", "latency_p95_ms", "distinct_2", "repeat_4gram_rate", "len_mean", "perplexity"):
        assert key in saved, key
    assert saved["decoding_max_new_tokens"] == 6 and saved["decoding_do_sample"] is False and saved["batch_size"] == 2
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["d1#1", "d1#3", "d2#1", "d3#2", "d4#1"]
    assert all("bleu4" in r and "latency_ms" in r and r["perplexity"] > 1 for r in rows if r["prediction"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<svg" in page and "BLEU-4 by intent" in page and "latency" in page.lower()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched: offline


def test_cli_eval_through_endpoint(tmp_path, monkeypatch):
    """`kefu eval --endpoint` (our own `kefu serve` or vLLM): a fake OpenAI server that returns the reference."""
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    answers = {}
    for d in DIALOGUES:
        for k, m in enumerate(d["messages"]):
            if m["role"] == "assistant":
                answers[d["messages"][k - 1]["content"]] = m["content"].split("<sep>")[0]

    def handler(request):
        body = json.loads(request.content)
        return httpx.Response(200, json={"choices": [{"message": {"content": answers[body["messages"][-1]["content"]]}}]})

    real = eval_runner.generate_via_endpoint
    monkeypatch.setattr(eval_runner, "generate_via_endpoint",
                        lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler))))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--endpoint", "http://serve.local/v1", "--model", "kefu", "--data",
                                      str(data), "--out", str(out), "--no-progress", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["source"] == "endpoint" and metrics["bleu4"] == pytest.approx(100.0)
    assert metrics["resolution_rate"] > 0 and metrics["handoff_rate"] == pytest.approx(1 / 5)
    assert metrics["key_fact_accuracy"] == 1.0


def test_cli_eval_reports_the_retrieval_baseline(tmp_path, monkeypatch):
    """`--train-data`: the shop's own past replies (best BM25 match) and the stock reply are scored on the same turns
    as the model, with the model/baseline ratios; `eval score --train-data` does the same for ready predictions."""
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    train = write_jsonl(tmp_path / "data" / "train.jsonl", [
        {"id": "t1", "messages": [{"role": "user", "content": "请问什么时候发货"},
                                  {"role": "assistant", "content": "亲，48小时内发货。"}]},
        {"id": "t2", "messages": [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在的亲"}]},
        {"id": "t3", "messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "在的亲"}]}])

    def handler(request):
        return httpx.Response(200, json={"choices": [{"message": {"content": "亲，在的"}}]})

    real = eval_runner.generate_via_endpoint
    monkeypatch.setattr(eval_runner, "generate_via_endpoint",
                        lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler))))
    runner = CliRunner()
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--endpoint", "http://serve.local/v1", "--data", str(data), "--out", str(out),
                                 "--no-progress", "--train-data", str(train.parent)])
    assert result.exit_code == 0, result.output
    assert "retrieval_bleu4" in result.output and "vs_retrieval_bleu4" in result.output
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["retrieval_bleu4"] > 0 and m["stock_reply"] == "在的亲"
    assert m["vs_retrieval_bleu4"] == pytest.approx(m["bleu4"] / m["retrieval_bleu4"])
    assert m["vs_stock_rougeL"] == pytest.approx(m["rougeL"] / m["stock_rougeL"]) if m["stock_rougeL"] else True
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1]["retrieval"] == "亲，48小时内发货。"  # d1#3 asked 什么时候发货
    preds = write_jsonl(tmp_path / "preds.jsonl", [
        {"id": "a", "prediction": "亲，在的", "references": ["亲，48小时内发货。"],
         "context": [{"role": "user", "content": "什么时候发货"}]}])
    result = runner.invoke(app, ["eval", "score", str(preds), "--out", str(tmp_path / "scored"), "--train-data",
                                 str(train)])
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text(encoding="utf-8"))
    assert scored["retrieval_bleu4"] == pytest.approx(100.0) and scored["vs_retrieval_bleu4"] < 1


def _preds(tmp_path, name, rows):
    return write_jsonl(tmp_path / name, rows)


def test_cli_score_and_compare(tmp_path):
    base = [{"id": "a", "prediction": "亲，在的", "references": ["亲，在的，请问有什么可以帮您？"], "intent": "greeting"},
            {"id": "b", "prediction": "可以退", "references": ["支持7天无理由退货"], "intent": "return_request",
             "facts": [{"type": "days", "value": 7}], "latency_ms": 50}]
    better = [dict(base[0], prediction="亲，在的，请问有什么可以帮您？"),
              dict(base[1], prediction="支持7天无理由退货哦", latency_ms=40)]
    runner = CliRunner()
    for name, rows in (("A", base), ("B", better)):
        result = runner.invoke(app, ["eval", "score", str(_preds(tmp_path, f"{name}.jsonl", rows)),
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name / "report.html").read_text(encoding="utf-8").count("<svg") >= 3
    a = json.loads((tmp_path / "A" / "metrics.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "B" / "metrics.json").read_text(encoding="utf-8"))
    assert b["bleu4"] > a["bleu4"] and b["key_fact_accuracy"] == 1.0 and a["key_fact_accuracy"] == 0.0
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "A"), str(tmp_path / "B")])
    assert result.exit_code == 0, result.output
    assert "bleu4" in result.output and "return_request" in result.output and "largest BLEU-4 drops" in result.output


def _error(args) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, KefuError), result.output
    return str(result.exception)


def test_bad_inputs_name_file_and_line(tmp_path):
    out = str(tmp_path / "o")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert "empty.jsonl: empty file" in _error(["eval", "score", str(empty), "--out", out])
    assert "missing.jsonl: file not found" in _error(["eval", "score", str(tmp_path / "missing.jsonl"), "--out", out])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": "a", "references": ["a"]}\n{"prediction": "b", "refer\n', encoding="utf-8")
    assert "bad.jsonl:2: not valid JSON" in _error(["eval", "score", str(bad), "--out", out])
    noref = _preds(tmp_path, "noref.jsonl", [{"prediction": "a", "references": ["a"]}, {"prediction": "b"}])
    assert "noref.jsonl:2: missing field 'references'" in _error(["eval", "score", str(noref), "--out", out])
    emptyref = _preds(tmp_path, "emptyref.jsonl", [{"prediction": "b", "references": ["", "NULL"]}])
    assert "emptyref.jsonl:1: field 'references' has no non-empty reference" in _error(
        ["eval", "score", str(emptyref), "--out", out])
    dup = _preds(tmp_path, "dup.jsonl", [{"id": 1, "prediction": "a", "references": ["a"]},
                                         {"id": "1", "prediction": "b", "references": ["b"]}])
    assert "dup.jsonl:2: duplicate id '1' (first on line 1)" in _error(["eval", "score", str(dup), "--out", out])
    wrong = _preds(tmp_path, "wrong.jsonl", [{"prediction": 3, "references": ["a"]}])
    assert "wrong.jsonl:1: field 'prediction' must be a string" in _error(["eval", "score", str(wrong), "--out", out])
    notobj = tmp_path / "list.jsonl"
    notobj.write_text("[1, 2]\n", encoding="utf-8")
    assert "list.jsonl:1: expected a JSON object" in _error(["eval", "score", str(notobj), "--out", out])
    test = write_jsonl(tmp_path / "test.jsonl", [{"id": "x", "messages": [{"role": "bot", "content": "hi"}]}])
    assert "test.jsonl:1: messages[0]" in _error(["eval", "--model", "m", "--data", str(test), "--out", out])
    assert "--data" in _error(["eval", "--model", "m"])
    assert "metrics.json: not found" in _error(["eval", "compare", str(tmp_path / "nope"), str(tmp_path / "nope2")])
    with pytest.raises(KefuError, match=r"metrics.json: not found"):
        compare(tmp_path / "nope", tmp_path / "nope2")
    assert len(load_predictions(_preds(tmp_path, "ok.jsonl", [{"prediction": "a", "references": "x<sep>y"}]))[0][
        "references"]) == 2


def test_eval_without_arguments_shows_help():
    result = CliRunner().invoke(app, ["eval"])
    assert result.exit_code == 0 and "score" in result.output and "compare" in result.output


def test_eval_run_folder_base_plus_adapter(tmp_path, monkeypatch):
    """`kefu eval --run RUN`: the base model named in RUN/config.yaml (as the trainer writes it) + RUN/adapter."""
    from peft import LoraConfig, get_peft_model  # deferred: heavy (torch)

    tok = make_tokenizer()
    base_dir = tmp_path / "base"
    make_model(tok).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    run = tmp_path / "run"
    run.mkdir()
    TrainRun(run).write_record({"train": {"model": str(base_dir)}, "model_path": str(base_dir)})
    peft_model = get_peft_model(make_model(tok), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    peft_model.save_pretrained(run / "adapter")
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES[:2])
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--data", str(data), "--out", str(out),
                                      "--max-new-tokens", "4", "--batch-size", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"] == str(base_dir) and metrics["adapter"] == str(run / "adapter")
    assert metrics["perplexity_model"] == "base (adapter disabled)" and metrics["decoding_max_new_tokens"] == 4
    with monkeypatch.context() as patch:  # a rerun of a finished eval rescores the file: no model is loaded
        patch.setattr(eval_runner, "load_local_model", lambda *a, **kw: pytest.fail("model loaded"))
        again = CliRunner().invoke(app, ["eval", "--run", str(run), "--data", str(data), "--out", str(out),
                                         "--max-new-tokens", "4", "--batch-size", "2", "--no-progress"])
        assert again.exit_code == 0, again.output
    rescored = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert rescored["bleu4"] == metrics["bleu4"] and rescored["resumed_predictions"] == rescored["n_samples"]
    assert rescored["adapter"] == str(run / "adapter") and rescored["perplexity"] == metrics["perplexity"]
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--base-only", "--data", str(data), "--out",
                                      str(tmp_path / "base_eval"), "--max-new-tokens", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "base_eval" / "metrics.json").read_text(encoding="utf-8"))["adapter"] is None
    shutil.rmtree(run / "adapter")
    assert "no trained adapter" in _error(["eval", "--run", str(run), "--data", str(data), "--out", str(out)])
    assert "--base-only" in _error(["eval", "--run", str(run), "--data", str(data), "--out", str(out)])
    (run / "config.yaml").unlink()
    assert "config.yaml: missing" in _error(["eval", "--run", str(run), "--base-only", "--data", str(data), "--out",
                                            str(out)])


def test_cli_score_with_judge(tmp_path, monkeypatch):
    """`--judge URL` switches the (default-off) satisfaction judge on; a fake OpenAI-compatible judge answers."""
    def handler(request):
        reply = json.loads(request.content)["messages"][1]["content"]
        score = 5 if "7天" in reply else 2
        return httpx.Response(200, json={"choices": [{"message": {"content": json.dumps({"score": score})}}]})

    real = eval_runner.judge_satisfaction
    monkeypatch.setattr(eval_runner, "judge_satisfaction",
                        lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler))))
    monkeypatch.setenv("KEFU_JUDGE_API_KEY", "secret")
    rows = [{"id": "a", "prediction": "支持7天无理由退货", "references": ["支持7天无理由退货"]},
            {"id": "b", "prediction": "嗯", "references": ["支持7天无理由退货"]}]
    path = _preds(tmp_path, "p.jsonl", rows)
    plain = CliRunner().invoke(app, ["eval", "score", str(path), "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert "judge_satisfaction" not in json.loads((tmp_path / "plain" / "metrics.json").read_text(encoding="utf-8"))
    judged = CliRunner().invoke(app, ["eval", "score", str(path), "--out", str(tmp_path / "j"), "--judge",
                                      "http://judge.local/v1", "--judge-model", "qwen"])
    assert judged.exit_code == 0, judged.output
    metrics = json.loads((tmp_path / "j" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["judge_satisfaction"] == 3.5 and metrics["judge_model"] == "qwen" and metrics["judge_n"] == 2


def test_score_against_a_reference_file_by_id(tmp_path):
    """Predictions made elsewhere (id + prediction) scored against the prepared test.jsonl; mismatched ids fail."""
    test = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    ids = ["d1#1", "d1#3", "d2#1", "d3#2", "d4#1"]
    preds = _preds(tmp_path, "p.jsonl", [{"id": i, "prediction": "支持7天无理由退货"} for i in ids])
    records = load_predictions(preds, test)
    assert [r["intent"] for r in records][2] == "return_request" and records[3]["references"][1] == "满300减50哦"
    assert records[2]["facts"] == [{"type": "days", "value": 7}]
    result = CliRunner().invoke(app, ["eval", "score", str(preds), "--references", str(test), "--out",
                                      str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text(encoding="utf-8"))["key_fact_accuracy"] == 1.0
    extra = _preds(tmp_path, "extra.jsonl", [{"id": i, "prediction": "x"} for i in ids + ["d9#1"]])
    assert "extra.jsonl:6: id 'd9#1' is not in" in _error(["eval", "score", str(extra), "--references", str(test),
                                                           "--out", str(tmp_path / "o")])
    short = _preds(tmp_path, "short.jsonl", [{"id": i, "prediction": "x"} for i in ids[:-1]])
    assert "test.jsonl:4: id 'd4#1' has no prediction" in _error(
        ["eval", "score", str(short), "--references", str(test), "--out", str(tmp_path / "o")])
    refs = _preds(tmp_path, "refs.jsonl", [{"id": "a", "references": ["好的"]}, {"references": ["好"]}])
    assert "refs.jsonl:2: missing field 'id'" in _error(["eval", "score", str(short), "--references", str(refs),
                                                        "--out", str(tmp_path / "o")])


def test_single_and_multi_reference_figures_are_named(tmp_path):
    """`*_single_ref`: against the first reference (how JDDC's human agreement is measured); `*_multi_ref`: over all
    references (NLTK multi-reference BLEU-4, the best ROUGE-L). `bleu4` is the multi-reference one, `rougeL` the
    single-reference one, as before."""
    rows = [{"id": "a", "prediction": "满300减50哦", "references": ["满300元减50元，可以和店铺券叠加。", "满300减50哦"]},
            {"id": "b", "prediction": "支持7天无理由退货", "references": ["支持7天无理由退货哦"]}]
    result = CliRunner().invoke(app, ["eval", "score", str(_preds(tmp_path, "p.jsonl", rows)), "--out",
                                      str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text(encoding="utf-8"))
    assert m["bleu4_multi_ref"] == m["bleu4"] and m["rougeL_single_ref"] == m["rougeL"]
    assert m["bleu4_single_ref"] < m["bleu4_multi_ref"] and m["rougeL_single_ref"] < m["rougeL_multi_ref"]
    scored = {r["id"]: r for r in map(json.loads, (tmp_path / "e" / "predictions.jsonl").read_text("utf-8").splitlines())}
    assert scored["a"]["rougeL_multi_ref"] == 100.0 and scored["a"]["bleu4_single_ref"] < 100.0
    assert "rougeL_multi_ref" not in scored["b"]
    result = CliRunner().invoke(app, ["eval", "score", str(_preds(tmp_path, "one.jsonl", rows[1:])), "--out",
                                      str(tmp_path / "one")])
    one = json.loads((tmp_path / "one" / "metrics.json").read_text(encoding="utf-8"))
    assert one["bleu4_single_ref"] == one["bleu4"] and "bleu4_multi_ref" not in one  # one reference each


def test_cli_eval_kg_grounds_the_samples(tmp_path, monkeypatch, shop_time):
    """`kefu eval --kg SHOP_FOLDER`: prompts carry the shop's facts; predictions record the raw and filled text."""
    from kefu.kg.prompt import FACTS_HEADER

    shop = Path(__file__).resolve().parents[2] / "examples" / "shop"
    if not (shop / "products.csv").exists():
        pytest.skip("sample shop not generated")
    lines = [json.loads(line) for line in (shop / "dialogues.jsonl").read_text("utf-8").splitlines()[:4]]
    data = write_jsonl(tmp_path / "test.jsonl", lines)
    systems = []

    def handler(request):
        systems.append(json.loads(request.content)["messages"][0])
        return httpx.Response(200, json={"choices": [{"message": {"content": "您的订单[订单状态]"}}]})

    real = eval_runner.generate_via_endpoint
    monkeypatch.setattr(eval_runner, "generate_via_endpoint",
                        lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler))))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--endpoint", "http://serve.local/v1", "--data", str(data), "--out",
                                      str(out), "--kg", str(shop), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert all(s["role"] == "system" for s in systems) and any(FACTS_HEADER in s["content"] for s in systems)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["grounded"] is True and m["kg"] == str(shop) and "unfilled_slot_rate" in m
    rows = {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text("utf-8").splitlines())}
    assert rows["d0003#1"]["prediction"] == "您的订单已发货" and rows["d0003#1"]["raw_prediction"] == "您的订单[订单状态]"
