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


# -- server-made sessions (issue 19) -----------------------------------------------------------------------------
import asyncio  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from serve_support import API_KEY, make_service  # noqa: E402


def test_created_sessions_have_random_ids_and_are_found_only_by_their_key_and_customer():
    store = SessionStore(idle_ttl_s=60)
    a, b = store.create("key-a", "C1"), store.create("key-a", "C1")
    assert a.id != b.id and a.id.startswith("sess_") and len(a.id) >= 30
    assert store.find("key-a", a.id, "C1") is a
    for owner, customer in (("key-b", "C1"), ("key-a", "C2"), ("key-a", None)):
        assert store.find(owner, a.id, customer) is None  # never made by find
        assert store.held_elsewhere(owner, a.id, customer)
    assert store.find("key-a", "sess_unknown", "C1") is None and not store.held_elsewhere("key-a", "sess_unknown")
    a.last_seen = time.monotonic() - 120  # idle past the TTL: gone
    assert store.find("key-a", a.id, "C1") is None and len(store) == 1  # dropped; b is left


class Recorder:
    """An engine that answers "好的。" and records what the model was shown."""

    name = "recorder"

    def __init__(self):
        self.prompts: list[list[dict]] = []

    def models(self):
        return ["tiny"]

    async def stream(self, messages, **kwargs):
        self.prompts.append(messages)
        yield "好的。"

    async def close(self):
        pass


@pytest.fixture
def recorded(tiny):
    from fastapi.testclient import TestClient

    from kefu.serve.app import create_app  # deferred: heavy (fastapi)
    from kefu.serve.gateway import Authenticator

    engine = Recorder()
    service = make_service(tiny, engine=engine)
    with TestClient(create_app(service, auth=Authenticator([API_KEY], use_store=False))) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client, engine, service


def ask(client, text, **extra):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": text}],
                                                  **extra})
    assert r.status_code == 200, r.text
    return r


def test_two_users_of_one_key_with_the_same_first_message_do_not_share_a_session(recorded):
    """Issue 19: sessions were derived from key + first message, so two users of one key who opened with the same
    words shared a session and saw each other's turns in the model's prompt."""
    client, engine, service = recorded
    first = "帮我推荐一款帐篷"
    alice, bob = ask(client, first), ask(client, first)
    sa, sb = alice.headers["x-kefu-session"], bob.headers["x-kefu-session"]
    assert sa != sb and alice.json()["kefu"]["session_id"] == sa and bob.json()["kefu"]["session_id"] == sb
    ask(client, "我想要能住三个人的，预算五百左右", session_id=sa)
    engine.prompts.clear()
    ask(client, "有防水的吗", session_id=sb)
    shown = "\n".join(m["content"] for m in engine.prompts[-1])
    assert "三个人" not in shown and "有防水的吗" in shown
    users = lambda sid: [t["content"] for t in service.sessions.find("env-" + __import__("hashlib").sha256(  # noqa: E731
        API_KEY.encode()).hexdigest()[:10], sid).turns if t["role"] == "user"]
    assert users(sa) == [first, "我想要能住三个人的，预算五百左右"] and users(sb) == [first, "有防水的吗"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stateless_client_asking_the_same_question_three_times_is_not_handed_off(recorded, stream):
    """Issue 19: the third identical question from a client that sends no session id was handed off as "2 failed
    turns" (all three landed in one derived session). Each now gets its own session; only a session's own history
    counts repeats."""
    client, _, _ = recorded
    sessions = set()
    for _ in range(3):
        r = ask(client, "帮我推荐一款帐篷", stream=stream)
        sessions.add(r.headers["x-kefu-session"])
        assert "已为您转接人工" not in r.text and '"path": "handoff"' not in r.text and '"path":"handoff"' not in r.text
    assert len(sessions) == 3
    # the same question three times in one session is still a customer going round in circles
    sid = ask(client, "帮我推荐一款帐篷").headers["x-kefu-session"]
    paths = [ask(client, "帮我推荐一款帐篷", session_id=sid).json()["kefu"]["path"] for _ in range(2)]
    assert paths[0] != "handoff" and paths[1] == "handoff"  # (the first from the cache: same question)


def test_in_process_callers_get_a_new_session_without_an_id_and_keep_theirs_with_one(tiny):
    service = make_service(tiny, engine=Recorder())
    replies = [asyncio.run(service.answer([{"role": "user", "content": "帮我推荐一款帐篷"}])) for _ in range(3)]
    assert len({r.session_id for r in replies}) == 3 and all(r.path != "handoff" for r in replies)
    named = [asyncio.run(service.answer([{"role": "user", "content": "帮我推荐一款帐篷"}], session_id="eval-1"))
             for _ in range(3)]
    assert {r.session_id for r in named} == {"eval-1"} and named[-1].path == "handoff"


def test_a_session_id_the_server_did_not_issue_is_404(recorded):
    client, _, _ = recorded
    for stream in (False, True):
        r = client.post("/v1/chat/completions", json={"model": "tiny", "session_id": "my-own-id", "stream": stream,
                                                      "messages": [{"role": "user", "content": "你好"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
        assert r.json()["error"]["param"] == "session_id"
