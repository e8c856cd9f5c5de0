"""Business metrics: key facts (right / wrong / missing), handoff, resolution proxy, latency, compliance, PII echo."""

from __future__ import annotations

import pytest

from kefu.eval.business import (business_metrics, check_fact, dates_stated, days_stated, has_resolving_action, is_handoff,
                                key_facts_from_kg, normalize_fact, percentile)


def test_day_and_date_readers():
    assert days_stated("7天无理由，15个工作日退款，11月20日前") == [7, 15]
    assert days_stated("七天无理由") == [7] and days_stated("两三天发货") == []  # a range, not 23 days
    assert dates_stated("预计2026-11-20送达，或11月21号，12/03") == [(2026, 11, 20), (None, 11, 21), (None, 12, 3)]
    assert dates_stated("三月五日或十一月二十号") == [(None, 3, 5), (None, 11, 20)]  # Chinese numerals: scoring only
    # the verifier's dates (kefu.text.claims): a one-digit day after a slash is a fraction, 3-15天 a range of days
    assert dates_stated("好评率3/4，3-15天到") == []


@pytest.mark.parametrize("prediction, fact, verdict", [
    ("券后到手价259元", {"type": "money", "value": 25900}, "correct"),
    ("券后到手价¥259.00", {"type": "money", "value": 25900}, "correct"),
    ("券后到手价269元", {"type": "money", "value": 25900}, "wrong"),  # a wrong number is a failure
    ("到手价二百五十九元", {"type": "money", "value": 25900}, "correct"),
    ("包裹运输中", {"type": "status", "value": "已发货"}, "wrong"),  # a logistics status word is a status too
    ("价格很优惠哦", {"type": "money", "value": 25900}, "missing"),
    ("支持七天无理由退货", {"type": "days", "value": 7}, "correct"),
    ("支持15天无理由退货", {"type": "days", "value": 7}, "wrong"),
    ("预计11月20日送达", {"type": "date", "value": "2026-11-20"}, "correct"),
    ("预计11月21日送达", {"type": "date", "value": "2026-11-20"}, "wrong"),
    ("您的订单已发货", {"type": "status", "value": "已发货"}, "correct"),
    ("您的订单待发货", {"type": "status", "value": "已发货"}, "wrong"),
    ("顺丰单号SF123", {"type": "text", "value": "SF123"}, "correct"),
])
def test_check_fact(prediction, fact, verdict):
    assert check_fact(prediction, fact) == verdict


def test_normalize_fact_forms():
    assert normalize_fact("SF123") == {"type": "text", "value": "SF123"}
    assert normalize_fact({"type": "price_fen", "value": 100})["type"] == "money"
    assert normalize_fact({"kind": "return_days", "value": 7}) == {"type": "days", "value": 7}
    assert normalize_fact({"type": "x"}) is None


def test_key_facts_from_kg_retrieve_shape():
    facts = [{"type": "price", "subject": "SL-10023", "text": "到手¥259", "data": {"list_fen": 39900, "payable_fen": 25900}},
             {"type": "policy", "subject": "冲锋衣", "text": "7天", "data": {"return_days": 7}},
             {"type": "order", "subject": "1234567890123456", "text": "...", "data": {"status": "已发货"}},
             {"type": "product", "subject": "SL-10023", "text": "...", "data": {}}]
    assert key_facts_from_kg(facts) == [{"type": "money", "value": 25900, "text": "到手¥259"},
                                        {"type": "days", "value": 7, "text": "7天"},
                                        {"type": "status", "value": "已发货", "text": "..."}]


def test_handoff_and_action_lexicons():
    assert is_handoff("好的，这就为您转人工客服") and not is_handoff("亲，48小时内发货")
    assert has_resolving_action("已为您申请退款") and has_resolving_action("预计明天送达")
    assert not has_resolving_action("嗯嗯")


def test_business_metrics_aggregate():
    records = [
        {"prediction": "券后到手价259元，支持7天无理由", "references": ["到手259元"], "latency_ms": 100,
         "facts": [{"type": "money", "value": 25900}, {"type": "days", "value": 7}], "predicted_intent": "price_inquiry",
         "intent": "price_inquiry"},
        {"prediction": "券后到手价269元", "references": ["到手259元"], "latency_ms": 200,
         "facts": [{"type": "money", "value": 25900}], "predicted_intent": "promotion_inquiry", "intent": "price_inquiry"},
        {"prediction": "好的，为您转人工客服", "references": ["稍等，为您转接专员"], "latency_ms": 300},
        {"prediction": "这是全网最低价，打13812345678联系我", "references": ["价格以页面为准"], "latency_ms": 400,
         "context": [{"role": "user", "content": "最便宜多少"}]},
    ]
    m, rows = business_metrics(records)
    assert m["key_fact_accuracy"] == pytest.approx(2 / 3)
    assert m["key_fact_error_rate"] == pytest.approx(1 / 2)
    assert m["intent_accuracy"] == pytest.approx(1 / 2) and m["intent_source"] == "prediction"
    assert m["handoff_rate"] == pytest.approx(1 / 4) and m["reference_handoff_rate"] == pytest.approx(1 / 4)
    # resolved: #1 states facts right; #2 states a wrong price; #3 correct handoff; #4 no resolving action
    assert [r["resolved"] for r in rows] == [True, False, True, False]
    assert m["resolution_rate"] == pytest.approx(1 / 2)
    assert m["latency_mean_ms"] == 250 and m["latency_p50_ms"] == 250 and m["latency_p95_ms"] == pytest.approx(385)
    assert m["compliance_violation_rate"] == pytest.approx(1 / 4) and rows[3]["compliance_hits"] >= 1
    assert m["pii_echo_rate"] == pytest.approx(1 / 4) and rows[3]["pii_echoed"] == 1
    # the same phone number in the customer's own context is not an echo of someone else's data
    own = dict(records[3], context="我的电话13812345678")
    assert business_metrics([own])[1][0]["pii_echoed"] == 0


def test_percentile_matches_numpy_linear():
    import numpy as np

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_key_facts_from_a_real_knowledge_graph(tmp_path):
    """`--kg`: the example shop imported into a KG; retrieve() supplies the price after promotions and the return
    window; a reply with the right numbers passes, one with a wrong price fails."""
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from kefu.eval.runner import open_kg
    from kefu.kg.retrieval import retrieve

    shop = Path(__file__).resolve().parents[2] / "examples" / "shop"
    from kefu.kg.store import KnowledgeGraph

    graph = KnowledgeGraph.open(f"sqlite:///{tmp_path / 'kg.db'}")
    graph.import_path(shop)
    kg = open_kg(tmp_path / "kg.db")
    at = datetime(2026, 11, 11, 10, 0, tzinfo=timezone(timedelta(hours=8)))
    question = "X1三合一冲锋衣 男款多少钱？可以七天无理由退货吗"
    truth = retrieve(kg, question, at=at)
    price = next(f["data"]["payable_fen"] for f in truth.facts if f["type"] == "price")
    yuan = f"{price / 100:g}"
    context = [{"role": "user", "content": question}]
    records = [
        {"prediction": f"亲，现在到手价{yuan}元，支持7天无理由退货哦", "references": ["r"], "context": context,
         "date": at.isoformat()},
        {"prediction": f"亲，现在到手价{price // 100 + 10}元，支持7天无理由退货哦", "references": ["r"],
         "context": context, "date": at.isoformat()},
    ]
    m, rows = business_metrics(records, kg=kg)
    assert rows[0]["fact_verdicts"] == ["correct", "correct"] and rows[0]["resolved"]
    assert rows[1]["fact_verdicts"] == ["wrong", "correct"] and not rows[1]["resolved"]
    assert m["key_fact_accuracy"] == pytest.approx(3 / 4) and m["key_fact_source"] == "kg+annotations"
    from kefu.types import KefuError

    with pytest.raises(KefuError, match="not found"):
        open_kg(tmp_path / "missing.db")
