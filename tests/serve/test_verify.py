"""Verification before sending, end to end on the sample shop: a model draft that states a wrong price, size or
tracking number, loops or echoes the system prompt never reaches the customer; slots fill from the asking
customer's own order only; nothing unverified is cached."""

import asyncio
import json

import pytest

from kefu.serve.verify import Evidence, echoes, looping, verify_reply
from serve_support import REPO_SHOP, Drafts, full_path_service

pytestmark = pytest.mark.skipif(not (REPO_SHOP / "products.csv").exists(), reason="sample shop not generated")

# examples/shop/orders.json: C0127's order, shipped by 圆通 with tracking number YT8780175989834
ORDER, OWNER, CARRIER, TRACKING = "2611217918058887", "C0127", "圆通速递", "YT8780175989834"


@pytest.fixture(autouse=True)
def _in_the_promotion_month(shop_time):
    """The sample shop's promotions run in November 2026."""


def ask(service, text, **kw):
    return asyncio.run(service.answer([{"role": "user", "content": text}], **kw))


def test_a_wrong_size_never_reaches_the_customer(tiny, shop_kg):
    # SL-10021 (X1 男款) comes in S–3XL: 4XL is invented
    service = full_path_service(tiny, shop_kg, Drafts("亲，X1冲锋衣有4XL码的，放心拍。"))
    reply = ask(service, "X1男款冲锋衣有XL码吗")
    assert "4XL" not in reply.text
    assert reply.replaced == "invented" and len(reply.verification) == 2  # the draft and its constrained retry
    assert "size 4XL" in reply.verification[0]


def test_a_colour_the_customer_asked_for_is_not_offered_unless_the_shop_has_it(tiny, shop_kg):
    """The customer's words back a colour as a word, not as stock: "有红色的冲锋衣" for an X1 that comes in 雾霾蓝/
    曜石黑/松针绿 is invented (the model's reply seen on the shop question set), while the light answer's "没有红色"
    says it absent and passes."""
    service = full_path_service(tiny, shop_kg, Drafts("亲，有红色的冲锋衣，可以选红色哦。"))
    reply = ask(service, "X1男款冲锋衣有红色的吗")
    assert reply.replaced == "invented" and "color 红色" in reply.verification[0]
    assert "有红色的冲锋衣" not in reply.text and "没有红色" in reply.text
    assert reply.path == "light" and len(reply.verification) == 2  # the draft and its constrained retry
    kept = full_path_service(tiny, shop_kg, Drafts("亲，这款有曜石黑，没有红色哦。"))
    fine = ask(kept, "X1男款冲锋衣有红色的吗")
    assert fine.replaced is None and fine.text == "亲，这款有曜石黑，没有红色哦。"


def test_an_answer_about_the_customers_order_always_says_where_it_is(tiny, shop_kg, shop_time):
    """"物流好几天没动了" answered with what the shop will do but not where the parcel is: the order's record follows
    (the order tool's when an order number is known, else the customer's one order among the KG facts). An answer
    that states the status gets nothing added; nothing is added for another customer."""
    promise = "亲，已为您催促快递，24小时内给您回复处理进度。"
    service = full_path_service(tiny, shop_kg, Drafts(promise))
    told = ask(service, "我的羽绒服物流好几天没动了 怎么回事", customer_id="C0128")
    assert told.path == "full" and told.text.startswith(promise) and "order status added" in told.fixes
    assert "尾号5055）当前状态：已发货" in told.text and "SF516691564041" in told.text
    tool = ask(full_path_service(tiny, shop_kg, Drafts(promise)), f"订单{ORDER}物流好几天没动了", customer_id=OWNER)
    assert tool.path == "full" and TRACKING in tool.text and tool.text.startswith(promise)
    stated = ask(full_path_service(tiny, shop_kg, Drafts("亲，您的订单已发货，已为您催促快递。")),
                 "我的羽绒服物流好几天没动了 怎么回事", customer_id="C0128")
    assert stated.text == "亲，您的订单已发货，已为您催促快递。" and "order status added" not in stated.fixes
    other = ask(full_path_service(tiny, shop_kg, Drafts(promise)), "我的羽绒服物流好几天没动了 怎么回事",
                customer_id="C9999")
    assert "5055" not in other.text and "SF516691564041" not in other.text


def test_a_wrong_tracking_number_never_reaches_the_customer(tiny, shop_kg):
    service = full_path_service(tiny, shop_kg, Drafts(f"您的订单已由{CARRIER}发出，运单号YT1111111111111。"))
    reply = ask(service, f"我的订单{ORDER}到哪了", customer_id=OWNER)
    # the compliance filter masks a tracking number no fact backs, and a masked reply is not sent either
    assert "YT1111111111111" not in reply.text and reply.replaced == "pii"
    assert TRACKING in reply.text  # the light path's answer from the order tool replaced it


def test_a_draft_that_fails_is_regenerated_once_under_constraints(tiny, shop_kg):
    engine = Drafts("这款冲锋衣整衣重达3公斤！", "这款冲锋衣的材质和价格以页面为准，需要的话我帮您转人工确认。")
    service = full_path_service(tiny, shop_kg, engine)
    reply = ask(service, "X2轻量硬壳冲锋衣是什么材质")
    assert reply.text.startswith("这款冲锋衣的材质") and reply.replaced is None and len(reply.verification) == 1
    assert engine.calls[1]["temperature"] == 0.0 and engine.calls[1]["max_new_tokens"] == max(16, engine.calls[0]["max_new_tokens"] // 2)


def test_a_held_answer_that_fails_late_is_regenerated_whole_and_a_streamed_one_keeps_only_verified_text(tiny, shop_kg):
    """A draft whose first sentence passes and second states a wrong size: a client that takes the answer whole
    (no stream; ``answer`` holds it) gets the constrained retry alone, never the first draft's sentence; a streaming
    client has already read the verified first sentence, and only the replacement follows it."""
    first, wrong = "亲，X1冲锋衣是男款。", "有4XL码的，放心拍。"
    retry = "亲，尺码以页面为准，需要的话我帮您转人工确认。"
    held = Drafts(first + wrong, retry)
    reply = ask(full_path_service(tiny, shop_kg, held), "X1男款冲锋衣有XL码吗")
    assert reply.text == retry and reply.replaced is None and len(held.calls) == 2
    assert len(reply.verification) == 1 and "size 4XL" in reply.verification[0]

    async def streamed(service):
        deltas = []
        async for event in service.respond([{"role": "user", "content": "X1男款冲锋衣有XL码吗"}]):
            if event["type"] == "delta":
                deltas.append((event["text"], event.get("replaces", False)))
            elif event["type"] == "done":
                return deltas, event["reply"]

    engine = Drafts(first + wrong, retry)
    deltas, live = asyncio.run(streamed(full_path_service(tiny, shop_kg, engine)))
    assert deltas[0] == (first, False) and "4XL" not in "".join(text for text, _ in deltas)
    assert live.replaced == "invented" and len(engine.calls) == 1  # part went out: replaced, not regenerated
    # the replacement is flagged as standing instead of what was streamed; the session keeps only it
    assert deltas[-1][1] is True and live.text == deltas[-1][0].lstrip("\n") and first not in live.text


def test_a_streamed_replacement_is_marked_for_clients_that_can_show_it_alone(tiny, shop_kg):
    """Over HTTP (SSE): the chunk carrying the replacement has ``kefu.replaces_sent`` (kefu's widget clears the
    bubble and shows it alone; other OpenAI clients append it)."""
    from fastapi.testclient import TestClient

    from kefu.serve.app import create_app
    from kefu.serve.gateway import Authenticator
    from serve_support import API_KEY

    service = full_path_service(tiny, shop_kg, Drafts("亲，X1冲锋衣是男款。有4XL码的，放心拍。"))
    with TestClient(create_app(service, auth=Authenticator([API_KEY], use_store=False))) as client:
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"model": "tiny", "stream": True,
                              "messages": [{"role": "user", "content": "X1男款冲锋衣有XL码吗"}]})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    pieces = [(c["choices"][0]["delta"].get("content", ""), (c.get("kefu") or {}).get("replaces_sent"))
              for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert pieces[0] == ("亲，X1冲锋衣是男款。", None)
    assert pieces[-1][1] is True and "4XL" not in "".join(text for text, _ in pieces)


def test_a_model_that_says_a_person_takes_over_is_not_believed(tiny, shop_kg):
    """"马上为您转接人工，当前排队1人" or "我是人工客服小岚" from the model: nobody was called, the customer would wait for
    no one. It fails verification (reason handoff) and the turn ends with kefu's own answer or a real handoff; a model
    that only offers one passes."""
    engine = Drafts("好的，马上为您转接人工，请稍等~", "您好，我是人工客服小岚，请问有什么可以帮您？")
    reply = ask(full_path_service(tiny, shop_kg, engine), "在吗")
    assert reply.replaced == "handoff" and len(engine.calls) == 2
    assert reply.path == "handoff" and reply.handoff is not None  # a real one: the session went to a person
    offer = ask(full_path_service(tiny, shop_kg, Drafts("亲，在的。需要的话我帮您转人工确认。")), "在吗")
    assert offer.replaced is None and offer.path == "full"


def test_a_looping_reply_is_replaced_and_never_cached(tiny, shop_kg):
    engine = Drafts("尺码是尺码，尺码是尺码，尺码是尺码，尺码是尺码。")
    service = full_path_service(tiny, shop_kg, engine)
    first = ask(service, "登山鞋尺码怎么选")
    assert "尺码是尺码，尺码是尺码" not in first.text and first.replaced == "loop"
    second = ask(service, "登山鞋尺码怎么选")
    assert not second.cached and len(engine.calls) == 4  # asked the model again: nothing was cached
    assert service.metrics.replacements.labels("loop")._value.get() == 2


def test_a_system_prompt_echo_is_replaced(tiny, shop_kg):
    service = full_path_service(tiny, shop_kg, Drafts(None))
    engine = service.engine
    engine.drafts = [service.system_prompt]
    reply = ask(service, "你们店铺是做什么的")
    assert service.system_prompt[:15] not in reply.text and reply.replaced == "echo"


def test_slots_fill_from_the_asking_customers_order_only(tiny, shop_kg):
    draft = "亲，您的订单[订单号]已由[快递]发出，运单号[运单号]，当前[订单状态]。"
    owner = ask(full_path_service(tiny, shop_kg, Drafts(draft)), f"我的订单{ORDER}到哪了", customer_id=OWNER)
    assert owner.replaced is None
    assert owner.text == f"亲，您的订单{ORDER}已由{CARRIER}发出，运单号{TRACKING}，当前已发货。"
    # another customer naming the same order number: no facts of that order, so the slots cannot be filled
    other = ask(full_path_service(tiny, shop_kg, Drafts(draft)), f"我的订单{ORDER}到哪了", customer_id="C0001")
    assert TRACKING not in other.text and CARRIER not in other.text and "[运单号]" not in other.text
    assert other.replaced == "slot"


def test_verdict_names_each_reason():
    evidence = Evidence.gather(["「X1三合一冲锋衣 男款」标价¥599.00，防水指数10000mm"], ["X1冲锋衣防水指数多少"],
                               system_prompt="你是「本店」的在线客服。回答简洁、礼貌、准确；价格、库存只能依据事实。")
    assert verify_reply("X1冲锋衣的防水指数是10000mm，标价599元。", evidence).ok
    assert verify_reply("防水指数10000，价格¥599", evidence).ok  # the same facts, other wording
    assert verify_reply("防水等级为3，防滑30天", evidence).reason == "invented"
    assert verify_reply("单号[运单号]", evidence).reason == "slot"
    assert verify_reply("", evidence).reason == "empty"
    assert verify_reply("您的手机13812345678已登记", evidence).problems[-1] == "pii: mobile"
    assert looping("请问还有其他可以帮到您的吗?" * 3) and not looping("满300减50，满600减120，满900减150")
    assert echoes("你是本店的在线客服。回答简洁、礼貌、准确", evidence.system_prompt)


def without_model_with_past_replies(tiny, shop_kg, pairs, engine=None):
    """The sample shop with these (question, reply) pairs, one past dialogue each, as its past replies, and no model
    served (``engine`` None: what the light path, the past replies and a handoff answer)."""
    from kefu.kg.replies import ReplyIndex
    from kefu.types import Dialogue, Turn

    service = full_path_service(tiny, shop_kg, engine)
    service.router.light_path = True
    service.engine = engine
    service.replies = ReplyIndex.build([Dialogue(f"d{i}", [Turn("user", q), Turn("assistant", a)])
                                        for i, (q, a) in enumerate(pairs)])
    return service


def test_the_shops_past_reply_answers_a_near_identical_question_with_this_turns_facts(tiny, shop_kg):
    service = without_model_with_past_replies(tiny, shop_kg, [
        ("发票怎么开呀", "亲，下单后在订单详情页申请电子发票即可。"), ("运单号是多少", "亲，您的运单号是[运单号]，[快递]配送。"),
        ("能便宜点吗", "亲，现在只要99元哦。")])
    invoice = ask(service, "发票怎么开呀？")
    assert invoice.path == "light" and invoice.text == "亲，下单后在订单详情页申请电子发票即可。"
    # a figure from the past that no fact of this turn backs is not repeated: a person answers instead
    cheaper = ask(service, "能便宜点吗")
    assert "99" not in cheaper.text and cheaper.path == "handoff"


def test_what_the_shops_agents_agree_on_answers_only_turns_the_shops_data_says_nothing_about(tiny, shop_kg):
    closings = ["请问还有其他可以帮到您的吗？", "请问还有其他问题可以帮到您的吗？", "还有其他可以帮您的吗？"]
    service = without_model_with_past_replies(tiny, shop_kg, [
        ("好的谢谢啦", "我们会员日有八折，欢迎下次光临"), *(("好的，谢谢你", reply) for reply in closings),
        *(("X1冲锋衣好看吗", "很好看的，亲，放心拍") for _ in range(3)), ("X1冲锋衣好看不", "好看的亲，很多人买")])
    thanks = ask(service, "好的谢谢")
    assert thanks.path == "light" and thanks.text == "请问还有其他可以帮到您的吗？"
    # about a product the shop's facts answer, or a person: never what agents said about it (or another one) before
    looks = ask(service, "X1冲锋衣穿上好看么")
    assert "好看" not in looks.text and looks.path == "handoff"
    service.config.consensus_min_agreement = 0.99  # the agents do not agree that closely: no consensus answer
    service.cache.clear()
    assert ask(service, "好的谢谢").path == "handoff"
    service.config.consensus_min_agreement, service.config.consensus_k = 0.15, 0  # switched off
    service.cache.clear()
    assert ask(service, "好的谢谢").path == "handoff"


def test_where_the_agents_do_not_agree_the_model_answers(tiny, shop_kg):
    agreed = [("好的，谢谢你", r) for r in ("请问还有其他可以帮到您的吗？", "请问还有其他问题可以帮到您的吗？")]
    scattered = [("那个东西怎么弄", r) for r in ("您看下说明书第三页", "稍等我问问仓库", "可以寄回来检测")]
    model = Drafts("亲，您具体是想了解哪方面呢？")
    service = without_model_with_past_replies(tiny, shop_kg, agreed + scattered, engine=model)
    thanks = ask(service, "好的谢谢")
    assert (thanks.path, thanks.reason, model.calls) == ("light", "the shop's agents agree", [])
    unsure = ask(service, "那个东西咋弄")
    assert unsure.path == "full" and unsure.text == "亲，您具体是想了解哪方面呢？" and len(model.calls) == 1


def test_serving_answers_with_the_consensus_the_eval_measures():
    from kefu.kg.replies import CONSENSUS_K, CONSENSUS_MIN_AGREEMENT, CONSENSUS_MIN_SIMILARITY
    from kefu.serve.config import ServeConfig

    config = ServeConfig()
    assert (config.consensus_k, config.consensus_min_similarity, config.consensus_min_agreement) == (
        CONSENSUS_K, CONSENSUS_MIN_SIMILARITY, CONSENSUS_MIN_AGREEMENT)


def test_loops_are_back_to_back_repeats_not_lists():
    assert looping("折叠，折叠，折叠") and looping("哈哈哈哈哈哈")
    policy = "定制款不支持7天无理由退货；内裤拆封后不支持7天无理由退货；刻字款不支持7天无理由退货；袜子不支持7天无理由退货"
    assert not looping(policy) and not looping("价格区间500-5000000")


def test_the_facts_header_is_an_echo():
    assert echoes("【店铺知识】\n- X1标价¥599", "") and echoes("已知事实：X1", "")


def test_money_in_fact_data_backs_the_same_amount_written_as_money():
    from types import SimpleNamespace

    from kefu.serve.verify import fact_texts

    facts = SimpleNamespace(prompt_block="", facts=[{"type": "promotion", "text": "每满200减20，最多减100",
                                                      "data": {"per_threshold_fen": 20000, "per_reduction_fen": 2000,
                                                               "cap_fen": 10000}}])
    evidence = Evidence.gather(fact_texts(facts, None), [])
    assert verify_reply("每满200元减20元，最多减¥100.00", evidence).ok
    assert verify_reply("最多减¥150", evidence).reason == "invented"


def test_a_short_sentence_copied_from_the_system_prompt_is_an_echo():
    prompt = "你是「本店」的在线客服。回答简洁、礼貌、准确；价格、库存、订单状态和日期只能依据下面给出的事实。"
    assert echoes("你是「本店」的在线客服。", prompt) and not echoes("亲，本店在线客服为您服务。", prompt)
    assert not echoes("好的，马上为您查询。", prompt)


def test_a_reply_that_says_the_customers_words_back_is_an_echo():
    evidence = Evidence.gather([], ["我这单你保证明天一定送到吗"])
    assert verify_reply("我这单你保证明天一定送到吗icional", evidence).reason == "echo"
    assert verify_reply("亲，明天能否送到要看物流，我帮您催一下。", evidence).ok
