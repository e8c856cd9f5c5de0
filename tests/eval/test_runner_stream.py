"""`kefu eval` writes predictions as it makes them, resumes, grounds on a knowledge graph and stays small in memory."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kefu.artifacts.run import TrainRun
from kefu.eval import runner as eval_runner
from kefu.eval.config import EvalConfig
from kefu.eval.predictions import read_predictions
from kefu.eval.runner import evaluate
from kefu.kg.prompt import FACTS_HEADER
from kefu.types import KefuError

from _tiny import DIALOGUES, make_model, make_tokenizer, write_jsonl

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
IDS = ["d1#1", "d1#3", "d2#1", "d3#2", "d4#1"]


@pytest.fixture(scope="module")
def tiny():
    tok = make_tokenizer()
    return make_model(tok), tok


def test_predictions_on_disk_as_made_and_a_rerun_resumes(tmp_path, tiny):
    model, tok = tiny
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    out = tmp_path / "eval"
    cfg = EvalConfig(batch_size=2, max_new_tokens=6)
    seen_on_disk = []

    def check(record):  # each line is in the file (flushed) when the next sample is still to come
        seen_on_disk.append([r["id"] for r in read_predictions(out / "predictions.jsonl")])

    assert evaluate(data, out, model_obj=model, tokenizer=tok, config=cfg, progress=False, stop_after=3,
                    on_record=check) is None  # stopped part-way, as a killed run would be
    assert [len(ids) for ids in seen_on_disk] == [1, 2, 3]
    first = {r["id"]: r for r in read_predictions(out / "predictions.jsonl")}
    assert len(first) == 3 and not (out / "metrics.json").exists()
    made = []
    metrics = evaluate(data, out, model_obj=model, tokenizer=tok, config=cfg, progress=False,
                       on_record=lambda r: made.append(r["id"]))
    assert sorted(made) == sorted(set(IDS) - set(first))  # the done ids are skipped
    assert metrics["n_samples"] == 5 and metrics["resumed_predictions"] == 3
    rows = list(read_predictions(out / "predictions.jsonl"))
    assert [r["id"] for r in rows] == IDS and all("bleu4" in r for r in rows)  # scored, in sample order
    assert all(rows[IDS.index(k)]["prediction"] == v["prediction"] for k, v in first.items())
    # the same batch of predictions scored again (nothing left to make: no model needed)
    again = evaluate(data, out, model_obj=model, tokenizer=tok, config=cfg, progress=False,
                     on_record=lambda r: made.append(r["id"]))
    assert again["bleu4"] == metrics["bleu4"] and len(made) == 2
    with pytest.raises(KefuError, match="other settings"):  # one file never mixes two setups
        evaluate(data, out, model_obj=model, tokenizer=tok, config=EvalConfig(max_new_tokens=9), progress=False)
    with pytest.raises(KefuError, match=r"other settings \(weights\)"):  # ... nor two models
        evaluate(data, out, model_obj=make_model(tok, seed=1), tokenizer=tok, config=cfg, progress=False)


def test_endpoint_predictions_stream_before_a_failure(tmp_path):
    """Sample 4 fails: the answers made before it are on disk, and the rerun asks only for the rest."""
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    asked = []

    def handler(fail):
        def answer(request):
            content = json.loads(request.content)["messages"][-1]["content"]
            asked.append(content)
            if fail and content == "满300减50怎么算":
                return httpx.Response(500, text="boom")
            return httpx.Response(200, json={"choices": [{"message": {"content": "亲，在的"}}]})
        return answer

    real = eval_runner.generate_via_endpoint
    out = tmp_path / "eval"
    for fail in (True, False):
        transport = httpx.MockTransport(handler(fail))
        eval_runner.generate_via_endpoint = lambda *a, t=transport, **kw: real(*a, **dict(kw, transport=t))
        try:
            if fail:
                with pytest.raises(KefuError, match="HTTP 500"):
                    evaluate(data, out, endpoint="http://serve.local/v1", config=EvalConfig(concurrency=1),
                             progress=False)
                kept = [r["id"] for r in read_predictions(out / "predictions.jsonl")]
                assert {"d1#1", "d1#3", "d2#1"} <= set(kept) and "d3#2" not in kept
                asked.clear()
            else:
                metrics = evaluate(data, out, endpoint="http://serve.local/v1", config=EvalConfig(concurrency=1),
                                   progress=False)
        finally:
            eval_runner.generate_via_endpoint = real
    questions = {"d3#2": "满300减50怎么算", "d4#1": "转人工"}
    assert asked == [q for k, q in questions.items() if k not in kept] and metrics["n_samples"] == 5


def test_progress_shows_with_eta_when_stderr_is_a_file(tmp_path, tiny, monkeypatch):
    model, tok = tiny
    data = write_jsonl(tmp_path / "test.jsonl", DIALOGUES)
    err = io.StringIO()  # not a terminal: Rich's bar would show nothing
    monkeypatch.setattr(sys, "stderr", err)
    evaluate(data, tmp_path / "eval", model_obj=model, tokenizer=tok, config=EvalConfig(max_new_tokens=4),
             progress=True)
    lines = err.getvalue().splitlines()
    assert any(line.startswith("kefu eval: 5/5 (100%)") and "eta" in line for line in lines), lines


@pytest.mark.skipif(not (SHOP / "products.csv").exists(), reason="sample shop not generated")
def test_kg_grounds_the_prompt_and_fills_the_slots(tmp_path, shop_time):
    """`--kg examples/shop`: the model is shown the facts (as training and serving show them), and its "[到手价]"
    is scored as the shop's payable price of that turn."""
    lines = [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text("utf-8").splitlines()]
    data = write_jsonl(tmp_path / "test.jsonl", [d for d in lines if d["id"] == "d0007"])
    prompts = []

    def handler(request):
        prompts.append(json.loads(request.content)["messages"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "秒杀到手价[到手价]"}}]})

    real = eval_runner.generate_via_endpoint
    eval_runner.generate_via_endpoint = lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler)))
    try:
        metrics = evaluate(data, tmp_path / "eval", endpoint="http://serve.local/v1", kg=SHOP,
                           config=EvalConfig(concurrency=1), progress=False)
    finally:
        eval_runner.generate_via_endpoint = real
    first = prompts[0]
    assert first[0]["role"] == "system" and FACTS_HEADER in first[0]["content"] and "629.3" in first[0]["content"]
    rows = {r["id"]: r for r in read_predictions(tmp_path / "eval" / "predictions.jsonl")}
    priced = rows["d0007#1"]
    assert priced["raw_prediction"] == "秒杀到手价[到手价]" and priced["prediction"] == "秒杀到手价¥629.3"
    assert priced["unfilled_slots"] == [] and priced["slots"]["到手价"] == "¥629.3"
    assert rows["d0007#3"]["unfilled_slots"] == ["[到手价]"]  # that turn's facts give no single price
    assert metrics["grounded"] is True and metrics["kg_source"] == "--kg"
    assert metrics["unfilled_slots"] >= 1 and 0 < metrics["unfilled_slot_rate"] < 1


@pytest.mark.skipif(not (SHOP / "products.csv").exists(), reason="sample shop not generated")
def test_the_runs_kg_is_the_default(tmp_path, shop_time, capsys):
    lines = [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text("utf-8").splitlines()]
    data = write_jsonl(tmp_path / "test.jsonl", [d for d in lines if d["id"] == "d0007"])
    run = tmp_path / "run"
    run.mkdir()
    TrainRun(run).write_record({"train": {"model": "m", "kg_url": str(SHOP), "shop_name": "山岚户外"}})
    prompts = []

    def handler(request):
        prompts.append(json.loads(request.content)["messages"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "好的"}}]})

    real = eval_runner.generate_via_endpoint
    eval_runner.generate_via_endpoint = lambda *a, **kw: real(*a, **dict(kw, transport=httpx.MockTransport(handler)))
    try:
        metrics = evaluate(data, tmp_path / "eval", run=run, endpoint="http://serve.local/v1", progress=False)
    finally:
        eval_runner.generate_via_endpoint = real
    assert metrics["kg_source"] == "run record (train.kg_url)" and metrics["kg"] == str(SHOP)
    assert "山岚户外" in prompts[0][0]["content"] and FACTS_HEADER in prompts[0][0]["content"]
    assert "train.kg_url" in capsys.readouterr().err  # said so


# -- memory ----------------------------------------------------------------------------------------------------------
def _long_dialogues(n: int, turns: int) -> list[dict]:
    return [{"id": f"L{i}", "messages": [m for t in range(turns) for m in (
        {"role": "user", "content": f"你好在吗这件冲锋衣有码什么时候发货{i}{t}"},
        {"role": "assistant", "content": "亲，在的，请问有什么可以帮您？支持7天无理由退货"})]} for i in range(n)]


def test_memory_stays_bounded_on_long_dialogues(tmp_path):
    """50 dialogues of ~2,200 prompt tokens, a tiny Llama with a 32k vocabulary, batch 8: the old eval grew by
    ~3 GB here (full-vocabulary logits over whole prompts for perplexity: rows × tokens × vocab floats, twice;
    8-row batches of 2,200-token prompts in attention). Now the prompt is capped at the trained context, batches at
    MAX_BATCH_TOKENS and perplexity asks for the reply's logits only: growth stays in the low hundreds of MB."""
    import psutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                                         pad_token_id=0, eos_token_id=1, bos_token_id=2)).float().eval()
    with torch.no_grad():  # replies in the tokenizer's vocabulary (so they are scored), logits over all 32k
        model.lm_head.weight[len(tok):] = 0
        model.lm_head.weight[:4] = 0
    data = write_jsonl(tmp_path / "long.jsonl", _long_dialogues(50, 40))
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        metrics = evaluate(data, tmp_path / "eval", model_obj=model, tokenizer=tok, progress=False,
                           config=EvalConfig(batch_size=8, max_new_tokens=8, last_turn_only=True))
    finally:
        stop.set()
        thread.join()
    growth_mb = (peak[0] - base) / 2**20
    assert metrics["n_samples"] == 50 and metrics["prompts_cut"] == 50 and metrics["perplexity"] > 1
    assert metrics["max_prompt_tokens"] == 1024 - 8
    rows = list(read_predictions(tmp_path / "eval" / "predictions.jsonl"))
    assert all(r["prompt_tokens"] <= 1016 and r["context"][-1]["role"] == "user" for r in rows)
    assert growth_mb < 1500, f"RSS grew by {growth_mb:.0f} MB"
