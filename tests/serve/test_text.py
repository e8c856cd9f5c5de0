"""serve.text: what two questions must share to share a cached answer; order numbers are kefu.text.claims's."""

from kefu.serve.text import key_entities, normalise


def test_order_numbers_match_however_typed():
    plain = key_entities("订单2611089953055203到哪了")
    assert plain.order_nos == ("2611089953055203",)
    assert key_entities("订单 26110899 53055203 到哪了").signature() == plain.signature()
    assert key_entities("订单２６１１０８９９５３０５５２０３到哪了").order_nos == plain.order_nos
    # two phone numbers side by side are not an order number
    assert key_entities("13912345678 13812345678").order_nos == ()


def test_other_entities_and_wording():
    assert key_entities("SL-10001 XL 黑色 不要").signature() == key_entities("sl-10001 xl 黑色 不要").signature()
    assert key_entities("XL码") != key_entities("L码")
    assert normalise("请问，這個有貨嗎？") == normalise("这个有货")
