"""Fact-like spans: what a reply claims, keyed by meaning rather than wording."""

from kefu.text.claims import claims, evidence_keys


def keys(text):
    return [c.key for c in claims(text)]


def test_each_kind_and_its_key():
    assert keys("订单2611217918058887已发货，圆通YT8780175989834") == [
        "order_no:2611217918058887", "status:已发货", "tracking_no:YT8780175989834"]
    assert keys("标价¥599.00，到手539.1元，八五折") == ["money:59900", "money:53910", "discount:85"]
    assert keys("防水指数10000mm，整衣重约350g，容量500毫升") == ["qty:10000:mm", "qty:350:g", "qty:500:ml"]
    assert keys("11月22日送达，11-30 23:59截止，2026-11-20下单") == ["date:11-22", "date:11-30", "time:23:59",
                                                               "date:11-20"]
    assert keys("买三件，7天无理由，1-3个工作日") == ["qty:3:件", "qty:7:天", "number:1", "qty:3:工作日"]
    assert keys("sf829657249208到哪了") == ["tracking_no:SF829657249208"]  # the carrier prefix typed in lower case


def test_words_that_are_not_figures():
    assert keys("X1冲锋衣3XL有货，20D尼龙，SL-10021") == ["qty:20:D", "sku:SL-10021"]
    assert keys("一件也行，稍等一下，十分抱歉，[订单号]") == []
    assert keys("当前排队[3]人，[数字x]天") == ["number:3"]  # a bracketed figure is no slot: it is verified


def test_evidence_backs_the_same_fact_in_other_words():
    backed = evidence_keys(["防水指数10000mm，标价¥599.00，订单2611217918058887"])
    assert {"qty:10000:mm", "number:10000", "money:59900", "number:599", "number:8887"} <= backed
    assert all(k in backed for k in keys("一万毫米，599元，尾号8887"))
    assert "money:49900" not in backed
