"""Slots: filled only from this request's facts, never guessed; slotify is their inverse for training text."""

from kefu.kg.slots import fill_slots, slot_values, slotify

FACTS = [{"type": "product", "data": {"name": "X1三合一冲锋衣 男款", "price_fen": 59900, "stock": 236}},
         {"type": "price", "data": {"list_fen": 59900, "payable_fen": 53910}},
         {"type": "order", "data": {"order_no": "2611217918058887", "status": "已发货", "paid_fen": 53910,
                                    "shipment": {"carrier": "圆通速递", "tracking_no": "YT8780175989834",
                                                 "events": [{"location": "西安转运中心", "status": "运输中"}]}}}]


def test_values_come_from_the_facts_and_only_when_single():
    values = slot_values(FACTS)
    assert values["到手价"] == "¥539.1" and values["运单号"] == "YT8780175989834" and values["库存"] == "236件"
    two_products = FACTS + [{"type": "product", "data": {"name": "X2", "price_fen": 89900, "stock": 0}}]
    assert "商品" not in slot_values(two_products) and "价格" not in slot_values(two_products)
    assert slot_values([]) == {}


def test_fill_leaves_unknown_slots_and_other_brackets():
    text, unfilled = fill_slots("[商品]到手[到手价]，[订单x]由[快递]发出，[姓名x]您好，[电话x]，【活动】[微笑]",
                                slot_values(FACTS))
    assert text == ("X1三合一冲锋衣 男款到手¥539.1，2611217918058887由圆通速递发出，亲您好，[电话x]，【活动】[微笑]")
    assert unfilled == ["[电话x]"]
    assert fill_slots("[运单号]", {})[1] == ["[运单号]"]


def test_slotify_inverts_fill_by_meaning():
    values = slot_values(FACTS)
    assert slotify("X1三合一冲锋衣 男款到手价539.10元，圆通速递单号YT8780175989834", values) == \
        "[商品]到手价[到手价]，[快递]单号[运单号]"


def test_slotify_keeps_a_product_name_that_holds_a_figure_whole():
    values = slot_values([{"type": "product", "data": {"name": "珠峰800蓬鹅绒羽绒服", "price_fen": 159900}}])
    assert slotify("珠峰800蓬鹅绒羽绒服标价1599元", values) == "[商品]标价[价格]"


def test_states_figures_tells_a_reply_with_its_own_figures_from_wording():
    from kefu.kg.slots import states_figures

    for text in ("亲，现价¥1599", "订单2611217918058887已发出", "运单号YT8780175989834", "预计12月3日送达",
                 "付款后48小时内发货", "打八五折", "SL-10021有货"):
        assert states_figures(text), text
    for text in ("亲，在的，请问有什么可以帮您？", "您的订单[订单x]实付[金额x]元", "已发货，请耐心等待", "[到手价]"):
        assert not states_figures(text), text
