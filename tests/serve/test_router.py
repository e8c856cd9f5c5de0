"""Router: handoff rules, the TF-IDF + LR classifier, threshold calibration, the quality curve, the CLI."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.serve.router import (Router, RouterModel, evaluate, guess_intent, label_for_intent, load_training_turns,
                               quality_curve)
from kefu.types import KefuError

LIGHT = {"price_inquiry": ["{p}多少钱", "{p}现在什么价格", "{p}价格是多少"],
         "order_status": ["我的订单发货了吗", "帮我查下订单状态", "订单到哪了"],
         "stock_inquiry": ["{p}还有货吗", "{p}有库存吗"],
         "invoice": ["怎么开发票", "发票抬头怎么改"]}
STRONG = {"size_recommendation": ["身高{h}体重{w}斤穿什么码", "{h}cm穿{p}选多大码"],
          "return_request": ["{p}穿着不合适想退货", "买的{p}能退吗有点大"],
          "product_recommendation": ["冬天爬山推荐哪款", "{p}和羽绒服选哪个好"]}


def synthetic(n=300, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        group = LIGHT if rng.random() < 0.6 else STRONG
        intent = rng.choice(sorted(group))
        text = rng.choice(group[intent]).format(p=rng.choice(["冲锋衣", "SL-10001", "登山鞋", "睡袋"]),
                                                h=rng.randint(150, 190), w=rng.randint(90, 200))
        rows.append({"id": f"d{i}", "messages": [{"role": "user", "content": text},
                                                 {"role": "assistant", "content": "好的"}],
                     "meta": {"intents": [intent]}})
    return rows


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_handoff_rules():
    router = Router()
    assert router.decide("转人工").path == "handoff"
    assert router.decide("我要人工客服").path == "handoff"
    assert router.decide("你们就是骗子，我要投诉！").path == "handoff"
    assert router.decide("还是没到", failures=2).path == "handoff"
    assert router.decide("冲锋衣多少钱", light_answer=True).path == "light"
    assert router.decide("身高175穿什么码", light_answer=False).path == "full"
    assert router.decide("订单1234567890123456呢", tool_answer=True).path == "light"
    assert guess_intent("我要投诉你们") == "complaint"
    assert label_for_intent("price_inquiry") == 0 and label_for_intent("return_request") == 1



def test_a_route_made_before_the_facts_settles_as_decide_would():
    """``route`` is asked before the KG and tools answer; ``settle`` then gives what ``decide`` gives with the
    answers known, asking the router nothing more. ``light_path=False`` keeps every non-handoff turn on the model."""
    rows = synthetic()
    model = RouterModel.fit([r["messages"][0]["content"] for r in rows], [r["meta"]["intents"][0] for r in rows])
    for router in (Router(), Router(model)):
        for text, failures in (("转人工", 0), ("还是没到", 2), ("冲锋衣多少钱", 0), ("身高175穿什么码", 0),
                               ("订单1234567890123456呢", 0), ("怎么开发票", 0)):
            route = router.route(text, failures=failures)
            for light, tool in ((False, False), (True, False), (False, True)):
                assert route.settle(light_answer=light, tool_answer=tool) == \
                    router.decide(text, failures=failures, light_answer=light, tool_answer=tool)
    assert Router().route("订单1234567890123456呢").order_tool
    assert Router().route("那物流到哪了", known_order="1234567890123456").order_tool
    assert not Router().route("物流到哪了").order_tool
    forced = Router(light_path=False).route("冲锋衣多少钱")
    assert forced.settle(light_answer=True, tool_answer=True).path == "full"
    assert Router(light_path=False).route("转人工").settle().path == "handoff"
    assert Router().route("冲锋衣多少钱").settle(light_answer=True).path == "light"


def test_a_turn_the_shops_data_settles_is_answered_from_it_whatever_the_classifier_says():
    """A strong intent (after-sales: "羽绒服能退吗") with the KG's complete answer goes the light path — the model
    would only say the shop's facts again, and a small one says them wrong; without that answer it goes to the model."""
    strong = replace(Router().route("羽绒服能退吗"), score=0.95, threshold=0.5)
    decision = strong.settle(light_answer=True)
    assert (decision.path, decision.reason) == ("light", "KG answer settles the turn")
    assert strong.settle(light_answer=False).path == "full"
    assert replace(strong, score=0.1).settle(light_answer=True).reason == "classifier: light + KG answer"
    by_rules = Router().route("羽绒服能退吗")
    assert label_for_intent(by_rules.intent) == 1 and by_rules.settle(light_answer=True).path == "light"

def test_fit_calibrate_save_load(tmp_path):
    rows = synthetic()
    texts = [r["messages"][0]["content"] for r in rows]
    intents = [r["meta"]["intents"][0] for r in rows]
    model = RouterModel.fit(texts, intents, target_full_share=0.5)
    share = float((model.score(texts) >= model.threshold).mean())
    assert abs(share - 0.5) < 0.1
    model.calibrate(texts, 0.2)
    assert abs(float((model.score(texts) >= model.threshold).mean()) - 0.2) < 0.1
    strong = model.score(["身高170体重120斤穿什么码"])[0]
    light = model.score(["冲锋衣多少钱"])[0]
    assert strong > light
    path = model.save(tmp_path / "r.pkl")
    again = RouterModel.load(path)
    assert np.allclose(again.score(texts[:5]), model.score(texts[:5])) and again.threshold == model.threshold
    summary = evaluate(model, texts, intents, tmp_path)
    assert (tmp_path / "router_curve.svg").read_text().startswith("<svg")
    curve = json.loads((tmp_path / "router_curve.json").read_text())["curve"]
    assert curve[0]["full_share"] == 0 and curve[-1]["quality"] == 1.0
    # a learned router beats random routing in the middle of the curve
    mid = curve[len(curve) // 2]
    assert mid["quality"] > mid["random_quality"]
    assert summary["n"] == len(texts)


def test_quality_curve_perfect_router():
    labels = np.array([0, 0, 1, 1])
    curve = quality_curve(np.array([0.1, 0.2, 0.8, 0.9]), labels, points=5)
    assert [p["quality"] for p in curve] == [0.5, 0.75, 1.0, 1.0, 1.0]


def test_training_data_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}], "meta": {"intents": []}}\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"bad.jsonl:1: meta.intents"):
        load_training_turns(bad)
    with pytest.raises(KefuError, match="only one class"):
        RouterModel.fit(["a", "b"], ["price_inquiry", "greeting"])


def test_cli_router_fit_writes_model_and_curve(tmp_path, kefu_home):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic(200))
    result = CliRunner().invoke(app, ["serve", "router", "fit", "--data", str(data), "--target-share", "0.4"])
    assert result.exit_code == 0, result.output
    out = kefu_home / "router"
    assert (out / "router.pkl").exists() and (out / "router_curve.svg").exists()
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.2 < summary["full_share"] < 0.6
    result = CliRunner().invoke(app, ["serve", "router", "eval", "--data", str(data)])
    assert result.exit_code == 0, result.output
