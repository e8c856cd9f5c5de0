"""`kefu eval system`: held-out turns of the sample shop through the serving pipeline, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.eval.predictions import read_predictions
from kefu.serve.config import ServeConfig
from kefu.serve.evaluate import build_eval_service, count_samples, evaluate_system, open_kg, system_metrics, unbacked
from kefu.serve.verify import Evidence, Verdict

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The bundled sample shop prepared by the real pipeline (as tests/loop/test_retrain.py does)."""
    from kefu.config import load_config
    from kefu.data.pipeline import prepare

    out = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEFU_HOME", str(tmp_path_factory.mktemp("prepare_home")))
        config = load_config(None, {"prepare.augment": False, "prepare.workers": 1}).prepare
        prepare([SHOP / "dialogues.jsonl"], out, config, catalogue=SHOP / "products.csv")
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_system_eval_on_the_sample_shop_without_a_model(tmp_path, prepared, shop_time):
    test = prepared / "test.jsonl"
    n = count_samples(test)
    out = tmp_path / "eval"
    on_disk: list[int] = []

    def seen(record):  # each prediction is on disk as soon as it is made, before the run ends
        on_disk.append(len([r for r in read_predictions(out / "predictions.jsonl") if r["id"] == record["id"]]))

    metrics = evaluate_system(test, out, kg=SHOP, progress=False, on_record=seen)
    assert on_disk == [1] * n
    assert metrics["n_samples"] == n and metrics["model"].startswith("none")
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("bleu4_single_ref", "rougeL_single_ref", "sacrebleu", "key_fact_accuracy", "invented_fact_rate",
                "invented_facts_per_reply", "path_mix", "replacements", "latency_p50_ms", "latency_p95_ms",
                "handoff_rate", "retrieval_bleu4", "vs_retrieval_bleu4"):
        assert key in saved, key
    assert saved["multi_reference_turns"] == 0 and "bleu4_multi_ref" not in saved  # one reference per sample
    assert abs(sum(saved["path_mix"].values()) - 1) < 1e-9 and set(saved["path_mix"]) <= {"light", "handoff", "cache"}
    assert saved["handoff_rate"] == saved["path_mix"].get("handoff", 0.0)
    assert saved["invented_fact_rate"] == 0.0  # no model: only verified shop answers and handoffs
    assert saved["key_fact_total"] >= 1 and saved["latency_p95_ms"] >= saved["latency_p50_ms"]
    assert saved["retrieval_data"].endswith("train.jsonl") and saved["retrieval_bleu4"] > 0
    rows = _lines(out / "predictions.jsonl")
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    for row in rows:
        assert {"prediction", "references", "path", "reason", "replaced", "verification", "latency_ms", "intent",
                "invented", "facts", "bleu4", "retrieval_prediction"} <= set(row)
        assert len(row["context"]) <= 7  # what the model is shown: the last 7 messages
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "System (through the serving pipeline)" in page and "Path mix" in page and "Replacements" in page


def _dialogue(did: str, date: str, *turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"id": did, "messages": [{"role": r, "content": t} for r, t in zip(roles, turns)],
            "meta": {"date": date, "intents": ["price_inquiry"] * ((len(turns) + 1) // 2)}}


class SayEngine:
    """A model that says one fixed reply."""

    name = "say"

    def __init__(self, text: str):
        self.text = text

    def models(self):
        return ["say"]

    async def stream(self, messages, **kwargs):
        yield self.text

    async def close(self):
        pass


def test_key_facts_and_invented_facts_on_hand_made_samples(tmp_path, shop_time):
    data = tmp_path / "test.jsonl"
    rows = [_dialogue("buy3", "2026-11-22T17:18:00+08:00", "通勤软壳买3件打折吗", "3件到手997.20元哦"),
            _dialogue("kid", "2026-11-23T16:33:00+08:00", "儿童三合一冲锋衣颜色好看吗", "挺好看的")]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kg, _ = open_kg(SHOP)
    wrong = "亲，下单后45天内发货哦。"  # the shop never said it

    # verification lets nothing unbacked through: the model's invented figure is replaced and counted
    service = build_eval_service(ServeConfig(), kg=kg, engine=SayEngine(wrong))
    metrics = evaluate_system(data, tmp_path / "verified", service=service, progress=False)
    by_id = {r["id"]: r for r in read_predictions(tmp_path / "verified" / "predictions.jsonl")}
    light = by_id["buy3#1"]
    assert light["path"] == "light" and "997.20" in light["prediction"]
    assert {"type": "money", "value": 99720} in [{k: f[k] for k in ("type", "value")} for f in light["facts"]]
    assert light["fact_verdicts"] == ["correct"] * len(light["facts"])
    model = by_id["kid#1"]
    assert model["replaced"] == "invented" and "45天" not in model["prediction"] and model["invented"] == []
    assert metrics["replacements"] == {"invented": 1} and metrics["verification_failures"]["invented"] == 2
    assert metrics["invented_fact_rate"] == 0.0 and metrics["replacement_rate"] == 0.5

    # a verification bug: the eval still finds the invented price on its own, from the turn's shop facts
    leaky = build_eval_service(ServeConfig(), kg=kg, engine=SayEngine(wrong))
    leaky.check = lambda text, found: Verdict()
    metrics = evaluate_system(data, tmp_path / "leaky", service=leaky, progress=False)
    by_id = {r["id"]: r for r in read_predictions(tmp_path / "leaky" / "predictions.jsonl")}
    assert by_id["kid#1"]["path"] == "full" and by_id["kid#1"]["invented"] == ["qty 45天"]
    assert by_id["buy3#1"]["invented"] == []
    assert metrics["invented_fact_rate"] == 0.5 and metrics["invented_facts_per_reply"] == 0.5
    assert metrics["invented_fact_kinds"] == {"qty": 1} and metrics["path_mix"] == {"full": 0.5, "light": 0.5}
    kg.close()


def test_key_facts_follow_the_order_under_discussion(tmp_path, shop_time):
    """"显示签收了但我没收到啊" after the customer named order …1149 is still about …1149, not about the same
    customer's newer order …8887: the turn's key fact is that order's status, which the system's answer states."""
    orders = {o["order_no"]: o for o in json.loads((SHOP / "orders.json").read_text(encoding="utf-8"))}
    named, newer = orders["2611037885261149"], orders["2611217918058887"]
    assert named["customer_id"] == newer["customer_id"] and named["status"] != newer["status"]
    data = tmp_path / "test.jsonl"
    row = _dialogue("lost", "2026-11-24T10:00:00+08:00", "[物流单号]，物流信息帮我看看", "亲，已经签收了哦。",
                    "显示签收了但我没收到啊", "亲别着急，麻烦先问下家人/门卫/快递柜。")
    row["meta"].update(customer_id=named["customer_id"], refs={"order_no": named["order_no"]})
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    metrics = evaluate_system(data, tmp_path / "eval", kg=SHOP, progress=False)
    second = {r["id"]: r for r in read_predictions(tmp_path / "eval" / "predictions.jsonl")}["lost#3"]
    statuses = [f["value"] for f in second["facts"] if f["type"] == "status"]
    assert statuses == [named["status"]] and named["order_no"][-4:] in second["prediction"]
    assert second["fact_verdicts"] == ["correct"] and metrics["key_fact_accuracy"] == 1.0


def test_unbacked_claims_against_evidence():
    evidence = Evidence.gather(["「城市软壳冲锋衣」标价¥399.00，到手¥997.20"], ["买3件"])
    assert unbacked("3件到手997.20元，标价399元", evidence) == ([], [])
    assert unbacked("3件到手¥999，7天发货", evidence)[0] == ["money ¥999", "qty 7天"]
    assert unbacked("请提供[订单号]", evidence)[0] == []  # a slot is not a claim


def test_system_metrics_from_records():
    base = {"references": ["好的"], "context": [{"role": "user", "content": "在吗"}], "intent": "greeting"}
    records = [dict(base, id="a", prediction="在的亲", path="light", invented=[], verification=[], latency_ms=2.0),
               dict(base, id="b", prediction="到手¥1", path="full", invented=["money ¥1", "number 3"],
                    verification=["invented: money ¥1"], replaced=None, latency_ms=10.0),
               dict(base, id="c", prediction="转人工", path="handoff", invented=[], replaced="loop",
                    verification=["loop: x", "loop: y"], latency_ms=4.0,
                    references=["好的", "稍等"])]
    metrics = system_metrics(records)
    assert metrics["invented_fact_rate"] == pytest.approx(1 / 3)
    assert metrics["invented_facts_per_reply"] == pytest.approx(2 / 3)
    assert metrics["path_counts"] == {"light": 1, "full": 1, "handoff": 1}
    assert metrics["replacements"] == {"loop": 1} and metrics["verification_failures"] == {"invented": 1, "loop": 2}
    assert metrics["handoff_rate"] == pytest.approx(1 / 3) and metrics["latency_p50_ms"] == 4.0
    assert metrics["multi_reference_turns"] == 1 and "bleu4_multi_ref" in metrics and "rougeL_multi_ref" in metrics


def test_resume_after_a_kill_writes_every_sample_once(tmp_path, prepared, shop_time):
    test = prepared / "test.jsonl"
    n = count_samples(test, max_samples=12)
    out = tmp_path / "eval"
    assert evaluate_system(test, out, kg=SHOP, max_samples=12, progress=False, stop_after=5) is None  # "killed"
    first = _lines(out / "predictions.jsonl")
    assert len(first) == 5
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "cut off by the ki')  # the kill came mid-line
    again: list[str] = []
    metrics = evaluate_system(test, out, kg=SHOP, max_samples=12, progress=False,
                              on_record=lambda r: again.append(r["id"]))
    ids = [r["id"] for r in _lines(out / "predictions.jsonl")]
    assert len(again) == n - 5 and not set(again) & {r["id"] for r in first}
    assert len(ids) == n == len(set(ids)) == metrics["n_samples"]


def test_cli_eval_system(tmp_path, prepared, shop_time):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "system", "--data", str(prepared / "test.jsonl"), "--out", str(out),
                                      "--kg", str(SHOP), "--max-samples", "4", "--last-turn-only"])
    assert result.exit_code == 0, result.output
    assert "invented_fact_rate" in result.output and "path_mix" in result.output
    assert "kefu eval system: 4/4" in result.output  # plain progress lines when not on a terminal
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "predictions.jsonl", "report.html"}
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["last_turn_only"] is True
    # same --out, other settings: refused rather than mixed
    result = CliRunner().invoke(app, ["eval", "system", "--data", str(prepared / "test.jsonl"), "--out", str(out),
                                      "--kg", str(SHOP), "--max-samples", "4"])
    assert result.exit_code != 0 and "other settings" in str(result.exception or result.output)
