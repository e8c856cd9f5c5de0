"""Sessions: isolation between keys and ids, bounded size, handoff summary."""

from kefu.serve.sessions import SessionStore


def test_sessions_are_isolated_by_key_and_id():
    store = SessionStore()
    a = store.get("key-a", "s1")
    a.add_turn("user", "我的订单呢", 10)
    assert store.get("key-b", "s1").turns == []
    assert store.get("key-a", "s2").turns == []
    assert store.get("key-a", "s1").turns == [{"role": "user", "content": "我的订单呢"}]
    c1 = store.get("key-a", "s3", "C0001")
    c1.add_turn("user", "订单1234567890123456", 10)
    assert store.get("key-a", "s3", "C0002").turns == []  # another customer guessing the id gets a new session
    assert store.peek("key-a", "s3", "C0001") is c1


def test_store_and_history_are_bounded():
    store = SessionStore(max_sessions=3, max_turns=4)
    for i in range(10):
        store.get("k", f"s{i}")
    assert len(store) == 3 and store.peek("k", "s0") is None and store.peek("k", "s9") is not None
    s = store.get("k", "s9")
    for i in range(9):
        s.add_turn("user", str(i), store.max_turns)
    assert [t["content"] for t in s.turns] == ["5", "6", "7", "8"]


def test_handoff_summary_is_rule_based():
    s = SessionStore().get("k", "s")
    s.intents += ["order_status", "complaint", "order_status"]
    s.remember("order_no", ["1234567890123456"])
    s.add_turn("user", "订单怎么还没到", 10)
    s.add_turn("assistant", "已发货", 10)
    s.add_turn("user", "我要投诉", 10)
    summary = s.summary()
    assert summary["intents"] == ["order_status", "complaint"]
    assert summary["last_question"] == "我要投诉"
    assert "订单查询" in summary["text"] and "1234567890123456" in summary["text"]
