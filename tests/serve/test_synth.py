"""Synthesis: prices, order status and dates come from facts; the compliance filter runs last."""

from kefu.serve.synth import Grounding, SentenceStream, ground, grounding_from, synthesize


def test_wrong_price_is_replaced_by_the_fact():
    text, fixes = ground("这款冲锋衣只要299元，很划算。", Grounding(prices={"SL-10001": 39900}))
    assert "¥399" in text and "299" not in text and fixes


def test_ambiguous_wrong_price_gets_the_grounded_lines():
    g = Grounding(prices={"A": 39900, "B": 19900}, lines=["A 价格 ¥399", "B 价格 ¥199"])
    text, _ = ground("只要99元", g)
    assert "以系统记录为准" in text and "¥399" in text and "¥199" in text


def test_supported_amounts_and_status_and_dates():
    g = Grounding(prices={"A": 39900}, allowed_fen={30000, 5000}, order_status="已发货", dates=["11月5日"])
    text, fixes = ground("满300减50后¥399；订单已签收，11月3日到。", g)
    assert "满300减50" in text and "已发货" in text and "已签收" not in text and "11月5日" in text
    assert len(fixes) == 2


def test_grounding_from_kg_facts():
    class F:
        facts = [{"type": "product", "subject": "SL-10001", "text": "标价¥399", "data": {"price_fen": 39900}},
                 {"type": "price", "subject": "SL-10001", "text": "到手¥349", "data": {"list_fen": 39900,
                                                                                     "payable_fen": 34900}},
                 {"type": "order", "subject": "1", "text": "订单：已发货", "data": {"status": "已发货",
                                                                              "created_at": "2026-11-02T10:00:00+08:00",
                                                                              "paid_fen": 34900}}]
        prompt_block = "满300减50"
        entities = []

    g = grounding_from(F())
    assert g.prices == {"SL-10001": 34900} and {39900, 30000, 5000} <= g.allowed_fen
    assert g.order_status == "已发货" and g.dates == ["11月2日"]


def test_compliance_runs_after_grounding():
    text, fixes, violations = synthesize("这是全网最好的冲锋衣，只要299元", Grounding(prices={"x": 39900}))
    assert "最好" not in text and "¥399" in text and fixes and violations


def test_sentence_stream_grounds_each_sentence():
    s = SentenceStream(Grounding(prices={"x": 39900}))
    out = s.feed("这是最好的。价格") + s.feed("299元！谢") + s.feed("谢") + s.flush()
    assert out == ["这是很好的。", "价格¥399！", "谢谢"]
    assert s.fixes and s.violations


def test_prices_in_chinese_numerals_or_with_cents_are_grounded_too():
    text, fixes = ground("只要二百九十九元，我们一块帮您看看", Grounding(prices={"x": 39950}))
    assert text == "只要¥399.5，我们一块帮您看看" and fixes == ["price ¥299 -> ¥399.5"]


def test_promotion_amounts_in_the_prompt_may_be_quoted():
    class F:
        facts = [{"type": "product", "subject": "A", "text": "标价¥399", "data": {"price_fen": 39900}}]
        prompt_block = "满三百减五十，每满200减20"

    g = grounding_from(F())
    assert {30000, 5000, 20000, 2000} <= g.allowed_fen
    assert ground("满300元减50元", g)[0] == "满300元减50元"
