"""Retrieval on sample turns: entity linking, facts, prompt block, the direct grounded answer, order scoping."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kefu.kg.retrieval import link, retrieve, trie_regex

from .conftest import AT

REPO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def types(facts):
    return [f["type"] for f in facts.facts]


def test_trie_regex_prefers_the_longest_term():
    rx = trie_regex(["风行", "风行冲锋衣", "冲锋衣", "a.b"])
    assert [m.group() for m in rx.finditer("风行冲锋衣和冲锋衣，风行")] == ["风行冲锋衣", "冲锋衣", "风行"]
    assert rx.fullmatch("a.b") and not rx.fullmatch("axb")  # terms are literals, not patterns


def test_links_products_aliases_colours_sizes_orders_tracking(kg):
    ents = link(kg, "风行有黑的吗？L码，订单2026111012345678，运单SF1234567890123，手机13800138000")
    got = {(e["type"], e["value"]) for e in ents}
    assert ("product", "SL-10001") in got and ("color", "黑") in got and ("size", "L") in got
    assert ("order_no", "2026111012345678") in got and ("logistics", "SF1234567890123") in got
    assert not any(e["value"] == "13800138000" for e in ents)  # an 11-digit phone number is neither
    first = next(e for e in ents if e["type"] == "product")
    assert "风行有黑的吗"[first["start"]:first["end"]] == "风行"


def test_price_question_answers_with_current_promotions(kg):
    facts = retrieve(kg, "风行冲锋衣多少钱？", customer_id="C0001", at=AT)
    assert facts.answer == "「山岚风行冲锋衣」标价¥599.00，单件按当前活动（双11跨店满减）到手¥549.00，另赠羊毛徒步袜×1。"
    assert types(facts)[0] == "price" and "promotion" in types(facts)
    assert facts.prompt_block.startswith("【店铺知识】\n- ")


def test_discount_then_reduction_in_the_price_fact(kg):
    facts = retrieve(kg, "极光羽绒服有优惠吗", at=AT)
    price = next(f for f in facts.facts if f["type"] == "price")
    assert price["data"]["payable_fen"] == 64415  # 899 × 0.85 − 120


def test_colour_and_size_availability(kg):
    facts = retrieve(kg, "城市冲锋衣有藏青色XL吗", at=AT)
    texts = " ".join(f["text"] for f in facts.facts)
    assert "没有藏青" in texts and "没有XL码" in texts and "暂时缺货" in texts
    facts = retrieve(kg, "风行有黑色L码吗", at=AT)
    color = next(f for f in facts.facts if f["type"] == "color")
    assert color["data"]["available"] == ["黑色"]


def test_return_window_of_a_category(kg):
    facts = retrieve(kg, "冲锋衣可以七天无理由退货吗", at=AT)
    assert facts.answer.startswith("冲锋衣商品支持7天无理由退货，15天内可换货，365天内保修")
    socks = retrieve(kg, "徒步袜能退吗", at=AT)
    assert "不支持无理由退货" in socks.answer and "贴身衣物" in socks.answer


def test_owned_order_status_and_logistics(kg):
    facts = retrieve(kg, "我的订单2026111012345678到哪了", customer_id="C0001", at=AT)
    assert facts.answer.startswith("您的订单2026111012345678当前状态：已发货。物流信息：顺丰速运 SF1234567890123")
    assert "上海转运中心" in facts.answer
    latest = retrieve(kg, "我的订单发货了吗", customer_id="C0001", at=AT)
    assert "2026111199990000" in latest.answer and "待发货" in latest.answer


def test_someone_elses_order_is_not_found_and_does_not_leak(kg):
    facts = retrieve(kg, "2026110511112222 到哪了", customer_id="C0001", at=AT)
    assert "没有查到订单2026110511112222" in facts.answer
    leaked = facts.prompt_block + facts.answer + str(facts.facts)
    for secret in ("羊毛徒步袜", "中通", "ZT9876543210", "北京朝阳", "227.00", "C0002"):
        assert secret not in leaked
    anonymous = retrieve(kg, "2026110511112222 到哪了", at=AT)
    assert "中通" not in anonymous.prompt_block
    by_tracking = retrieve(kg, "ZT9876543210 到哪了", customer_id="C0001", at=AT)
    assert "北京朝阳" not in by_tracking.prompt_block


def test_logistics_exception_brings_the_playbook_and_no_canned_answer(kg):
    facts = retrieve(kg, "快递显示签收了但是我没收到，是不是丢件了", customer_id="C0002", at=AT)
    playbook = next(f for f in facts.facts if f["type"] == "playbook")
    assert playbook["subject"] == "lost" and "禁止承诺：立即赔偿额外现金" in playbook["text"]
    assert facts.answer is None and "ZT9876543210" in facts.prompt_block
    for text, kind in [("衣服到了但是破损了", "damaged"), ("物流好几天没更新了", "delay"), ("我想改地址", "address_change"),
                       ("我要拒收", "refused")]:
        assert any(f["type"] == "playbook" and f["subject"] == kind for f in retrieve(kg, text, at=AT).facts), text


def test_faq_exact_and_near_match(kg):
    assert retrieve(kg, "可以开发票吗", at=AT).answer == "可以，订单签收后在订单详情页申请电子发票。"
    assert retrieve(kg, "你们多久发货呀", at=AT).answer == "付款后48小时内发货，预售商品以详情页为准。"
    assert retrieve(kg, "今天天气不错", at=AT).answer is None


def test_faq_matches_on_the_words_that_tell_questions_apart(shop_kg, shop_time):
    """On the sample shop's FAQ: 可以开发票吗 is 能开发票吗？ (the bigram overlap alone misses it: 可以 and 吗 weigh as
    much as 发票), 客服几点下班 is 客服几点上班？; 什么时候发货 is not 双11活动到什么时候？ (only 什么时候 shared)."""
    faq = {e["question"]: e["answer"] for e in json.loads((REPO_SHOP / "faq.json").read_text("utf-8"))}
    assert retrieve(shop_kg, "可以开发票吗").answer == faq["能开发票吗？"]
    assert retrieve(shop_kg, "客服几点下班").answer == faq["客服几点上班？"]
    assert faq["双11活动到什么时候？"] not in (retrieve(shop_kg, "什么时候发货？").answer or "")
    # question words said another way are the same question; what is asked about must still be shared
    assert retrieve(shop_kg, "什么时候发货？").answer == faq["下单后多久发货？"]
    assert retrieve(shop_kg, "退款几天到账").answer == faq["退款多久到账？"]
    assert not [f for f in retrieve(shop_kg, "什么时候到").facts if f["type"] == "faq"]  # not 退款多久到账？
    # the wording match stands down to 0.5 when the telling-words match finds nothing (您好 weighs it below 0.5)
    assert retrieve(shop_kg, "您好，这个是正品吗").answer == faq["你们是正品吗？"]


def test_relations_for_accessories(kg):
    facts = retrieve(kg, "碳素登山杖有什么配件", at=AT)
    relation = next(f for f in facts.facts if f["type"] == "relation")
    assert relation["data"]["target"] == "SL-10008" and "配件" in relation["text"]


def test_expired_promotions_never_appear(kg):
    facts = retrieve(kg, "有什么活动", at=AT)
    assert "国庆" not in facts.prompt_block and "双11跨店满减" in facts.prompt_block


def test_linker_cache_follows_version(kg, shop_dir):
    assert retrieve(kg, "风行冲锋衣多少钱", at=AT).facts
    path = shop_dir / "products.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("风行冲锋衣|风行", "疾风冲锋衣"), encoding="utf-8")
    kg.import_path(path)
    assert not any(e["type"] == "product" and e["text"] == "风行" for e in link(kg, "风行多少钱"))
    assert any(e["value"] == "SL-10001" for e in link(kg, "疾风冲锋衣多少钱"))


def test_prompt_block_is_short_and_capped(kg):
    facts = retrieve(kg, "风行冲锋衣和城市冲锋衣和极光羽绒服多少钱，能退吗，有优惠吗", at=AT, max_facts=6)
    assert len(facts.facts) == 6 and facts.answer is None  # several questions: the model answers
    assert len(re.findall(r"^- ", facts.prompt_block, re.M)) == 6


def test_category_only_turn_brings_in_stock_picks(kg):
    facts = retrieve(kg, "想买个冲锋衣", at=AT)
    picks = [f for f in facts.facts if f["type"] == "recommendation"]
    assert [f["subject"] for f in picks] == ["SL-10001"]  # SL-10002 is out of stock
    assert "品类：冲锋衣" in picks[0]["text"]


def test_policy_answer_needs_a_specific_category(kg):
    facts = retrieve(kg, "我的退款呢", at=AT)
    assert facts.answer is None or "无理由" not in facts.answer


def test_size_question_leaves_promotions_out(kg):
    facts = retrieve(kg, "风行冲锋衣有XL码吗", at=AT)
    assert "promotion" not in types(facts) and "size" in types(facts)


def test_sample_shop_turns():
    import json
    from pathlib import Path

    import pytest

    from kefu.kg.promotions import CartItem, price_cart
    from kefu.kg.store import KnowledgeGraph

    shop = Path(__file__).resolve().parents[2] / "examples" / "shop"
    if not (shop / "products.csv").exists():
        pytest.skip("examples/shop not generated yet")
    kg = KnowledgeGraph.open()
    kg.import_path(shop)
    product = next(p for p in kg.products() if p.stock > 0)
    facts = retrieve(kg, f"{product.name}多少钱", at=AT)
    price = next(f for f in facts.facts if f["type"] == "price")
    expected = price_cart([CartItem(product.sku, 1, product.price_fen, product.category)],
                          [p for p in kg.promotions(AT) if p.type != "coupon"], AT).payable_fen
    assert price["data"]["payable_fen"] == expected and product.name in facts.answer
    faq = json.loads((shop / "faq.json").read_text(encoding="utf-8"))[0]
    assert retrieve(kg, faq["question"], at=AT).answer == faq["answer"]
    order = json.loads((shop / "orders.json").read_text(encoding="utf-8"))[0]
    own = retrieve(kg, f"订单{order['order_no']}怎么样了", customer_id=order["customer_id"], at=AT)
    assert order["status"] in own.answer
    other = retrieve(kg, f"订单{order['order_no']}怎么样了", customer_id="C9999-not-the-owner", at=AT)
    assert "没有查到" in other.answer


def test_empty_graph_and_empty_text():
    from kefu.kg.store import KnowledgeGraph

    empty = KnowledgeGraph.open()
    facts = retrieve(empty, "风行冲锋衣多少钱 2026111012345678", customer_id="C0001", at=AT)
    assert facts.answer is None and types(facts) == ["order_not_found"]  # two questions: the model answers
    assert [e["type"] for e in facts.entities] == ["order_no"]
    assert retrieve(empty, "2026111012345678", customer_id="C0001", at=AT).answer.startswith("没有查到订单")
    assert retrieve(empty, "", at=AT).facts == []


def test_stock_by_colour_and_size_when_the_catalogue_has_it(tmp_path):
    from kefu.kg.store import KnowledgeGraph

    path = tmp_path / "v" / "products.csv"
    path.parent.mkdir()
    path.write_text("sku,name,aliases,category,brand,price_fen,stock,colors,sizes,material,style,description,variant_stock\n"
                    "SL-30001,雪线羽绒服,雪线,羽绒服,雪线,99900,5,曜石黑|米白,M|L,鹅绒,休闲,,曜石黑/M:0|曜石黑/L:5|米白/M:0\n",
                    encoding="utf-8")
    kg = KnowledgeGraph.open()
    kg.import_path(path)
    facts = retrieve(kg, "雪线黑色L码还有货吗", at=AT)
    assert facts.answer == "「雪线羽绒服」曜石黑/L：库存5件。"
    # out of stock now also names the variants in stock (曜石黑/L:5 in the row above)
    assert retrieve(kg, "雪线黑的M码有货吗", at=AT).answer == "「雪线羽绒服」曜石黑/M：缺货；有货的还有：曜石黑/L（5件）。"


def test_an_order_and_its_return_windows_are_answered_from_the_data(kg):
    """"我的订单X能退吗" asks two things the shop settles: the order's status and the windows of what it holds; the
    answer states both, in pieces a caller with a live order tool can reuse (``parts``)."""
    facts = retrieve(kg, "我的订单2026111012345678能退吗", customer_id="C0001", at=AT)
    assert {"order", "policy"} <= set(types(facts))
    assert next(f for f in facts.facts if f["type"] == "policy")["subject"] == "冲锋衣"
    assert set(facts.parts) == {"order", "after_sales"}
    assert "当前状态：已发货" in facts.parts["order"] and "7天无理由退货" in facts.parts["after_sales"]
    assert facts.answer == facts.parts["order"] + facts.parts["after_sales"]
    # what it paid is not a question about windows: no policy answered
    paid = retrieve(kg, "我的订单2026111012345678实付多少", customer_id="C0001", at=AT)
    assert set(paid.parts) == {"order"} and "退货" not in paid.answer
    # another customer's order: nothing of it, and no windows of what it holds
    foreign = retrieve(kg, "订单2026111012345678能退吗", customer_id="C0002", at=AT)
    assert "2026111012345678当前状态" not in (foreign.answer or "") and "after_sales" not in foreign.parts


def test_another_customers_tracking_number_is_answered_as_not_found(kg):
    """"SF… 这个快递到哪了" with someone else's tracking number: a direct "not found" answer (never the order behind
    it), so no model is asked to improvise; its owner gets the order."""
    other = retrieve(kg, "SF1234567890123 这个快递到哪了", customer_id="C0002", at=AT)
    assert other.answer == "没有查到运单SF1234567890123对应的您的订单，请核对运单号，或用下单的账号联系我们。"
    assert "2026111012345678" not in other.prompt_block and types(other) == ["order_not_found"]
    owner = retrieve(kg, "SF1234567890123 这个快递到哪了", customer_id="C0001", at=AT)
    assert owner.answer.startswith("您的订单2026111012345678当前状态")


def test_repeated_number_is_looked_up_once(kg):
    facts = retrieve(kg, "2026110511112222，对，就是2026110511112222", customer_id="C0001", at=AT)
    assert types(facts) == ["order_not_found"] and facts.answer.startswith("没有查到订单")


def test_short_latin_model_names_link_only_as_whole_words(tmp_path):
    from kefu.kg.store import KnowledgeGraph

    path = tmp_path / "m" / "products.csv"
    path.parent.mkdir()
    path.write_text("sku,name,aliases,category,brand,price_fen,stock,colors,sizes,material,style,description\n"
                    "SL-40001,X1三合一冲锋衣,X1|X1冲锋衣,冲锋衣,山岚,59900,3,黑色,L,尼龙,城市通勤,\n", encoding="utf-8")
    kg = KnowledgeGraph.open()
    kg.import_path(path)
    assert [e["value"] for e in link(kg, "X1有L码吗") if e["type"] == "product"] == ["SL-40001"]
    assert not [e for e in link(kg, "型号SX12的那件") if e["type"] == "product"]



def test_latin_names_link_in_any_case_and_sizes_need_a_whole_word(tmp_path):
    from kefu.kg.store import KnowledgeGraph

    path = tmp_path / "m" / "products.csv"
    path.parent.mkdir()
    path.write_text("sku,name,aliases,category,brand,price_fen,stock,colors,sizes,material,style,description\n"
                    "SL-40001,X1三合一冲锋衣,X1|X1冲锋衣,冲锋衣,山岚,59900,3,黑色,L,尼龙,城市通勤,\n"
                    "SL-40002,X2硬壳冲锋衣,X2,冲锋衣,山岚,89900,0,黑色,L,尼龙,城市通勤,\n"
                    "SL-40003,儿童冲锋衣,,冲锋衣,山岚,32900,5,黄色,110|160,尼龙,休闲,\n", encoding="utf-8")
    kg = KnowledgeGraph.open()
    kg.import_path(path)

    def products(text):
        return [(e["text"], e["value"]) for e in link(kg, text) if e["type"] == "product"]

    assert products("x1冲锋衣多少钱") == [("x1冲锋衣", "SL-40001")]  # the text as typed, the catalogue's product
    assert products("x2有L码吗") == [("x2", "SL-40002")]
    assert products("x1冲锋衣 x2 多少钱") == [("x1冲锋衣", "SL-40001")]  # ×2 after a product is a quantity
    assert products("x1和x2哪个好") == [("x1", "SL-40001"), ("x2", "SL-40002")]
    sizes = [e["value"] for e in link(kg, "儿童冲锋衣有170码吗 what's the price") if e["type"] == "size"]
    assert sizes == ["170"]  # a height with 码 is a size; the s of "what's" is not S
    sizes = [e["value"] for e in link(kg, "四十二码和一百七十码，三十号能到吗") if e["type"] == "size"]
    assert sizes == ["42", "170"]  # sizes in Chinese numerals; 三十号 is a date
    got = [(e["type"], e["value"]) for e in link(kg, "X1冲锋衣白L 还有吗") if e["type"] in ("color", "size")]
    assert got == [("color", "白"), ("size", "L")]  # a bare colour character right before a size
    got = [(e["type"], e["value"]) for e in link(kg, "X1 M码 黑 还有吗") if e["type"] in ("color", "size")]
    assert got == [("size", "M"), ("color", "黑")]  # or standing alone
    assert [e["value"] for e in link(kg, "X1冲锋衣 42 有吗") if e["type"] == "size"] == ["42"]  # a bare shoe size
    for text in ("X1冲锋衣39元吗", "X1冲锋衣买40件", "X1能抗40度吗", "42有吗"):  # money, a count, a measure, no product
        assert not [e for e in link(kg, text) if e["type"] == "size"], text
    # an everyday word for a category the shop has (冲锋衣 here), never one it lacks or a catalogue term
    assert ("category", "冲锋衣") not in {(e["type"], e["value"]) for e in link(kg, "背包保修多久")}
    assert not [e for e in link(kg, "背包保修多久") if e["type"] == "category"]  # no 双肩包 in this shop


def test_order_number_typed_with_spaces_and_the_order_holding_a_product(kg):
    facts = retrieve(kg, "订单号是2026 1110 1234 5678，想换个码", customer_id="C0001", at=AT)
    assert any(f["type"] == "order" and f["subject"] == "2026111012345678" for f in facts.facts)
    repair = retrieve(kg, "买的风行冲锋衣拉链坏了能修吗", customer_id="C0001", at=AT)
    assert any(f["type"] == "order" and f["subject"] == "2026111012345678" for f in repair.facts)
    assert any(f["type"] == "policy" and f["subject"] == "冲锋衣" for f in repair.facts)
    assert "promotion" not in types(repair)


def test_order_number_groupings(kg):
    def orders(text):
        return [e["value"] for e in link(kg, text) if e["type"] == "order_no"]

    assert orders("单号26110899 53055203") == ["2611089953055203"]
    assert orders("2611-0899-5305-5203") == ["2611089953055203"]
    assert orders("电话13800138000 12345") == [] and orders("身份证110101199003077777") == []
