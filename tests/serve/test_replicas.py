"""Three real ``kefu serve`` processes on loopback sharing one state (PostgreSQL + Redis, ``shared_state``), each with
its own ``$KEFU_HOME`` as on separate machines and no model (answers come from the shop's KG, else a handoff): a
conversation continues on another replica, an answer cached by one is a hit on another, a key's rate limit is one
bucket for all, and when one replica is killed (SIGKILL) mid-load, the clients re-routed to the others are answered
and every feedback post that was acknowledged can be read back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from kefu.loop.feedback import FeedbackStore
from kefu.safety.keys import KeyStore
from replica_support import KEY_PEPPER, SHOP, kefu, replica_env, replicas

LIMITED = {"rate_limit_per_s": 0.2, "rate_limit_burst": 30}  # one token per 5 s: the burst is what a key gets


@pytest.fixture
def fleet_env(shared_state, tmp_path, monkeypatch) -> tuple[dict[str, str], Path]:
    """The shared state with the example shop's KG imported (once, into PostgreSQL) and this process's key store on
    it (the replicas' pepper), acting with its first key, an admin's, that creates the others."""
    monkeypatch.setenv("KEFU_KEY_PEPPER", KEY_PEPPER)
    monkeypatch.setenv("KEFU_KEY", KeyStore.open().create("admin", "replica-test-admin")[0])
    kefu(["kg", "import", str(SHOP)], replica_env(tmp_path, shared_state, "admin"))
    return shared_state, tmp_path


def new_key(name: str) -> str:
    """A shop-backend key (chat, feedback, asserting customers) in the shared key store."""
    return KeyStore.open().create("shop-backend", name)[0]


def chat(url: str, key: str, text: str, session: str | None = None, model: str | None = None) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}], "customer_id": "C0001"}
    if model:
        body["model"] = model
    if session:
        body["session_id"] = session
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def served_model(url: str, key: str) -> str:
    models = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return models["data"][0]["id"]


def test_sessions_cache_and_rate_limits_are_shared_by_the_replicas(fleet_env):
    state_env, root = fleet_env
    config = root / "kefu.yaml"
    config.write_text("serve:\n" + "".join(f"  {k}: {v}\n" for k, v in LIMITED.items()), encoding="utf-8")
    key, other_key, limited_key = new_key("replicas"), new_key("replicas-other"), new_key("replicas-limited")
    with replicas(3, root, state_env, ["--config", str(config)]) as (a, b, c):
        model = served_model(a.url, key)

        # a conversation made on a continues on b: b knows the session and the product under discussion
        first = chat(a.url, key, "SL-10021多少钱", model=model)
        assert first.status_code == 200 and first.headers["x-kefu-path"] == "light", first.text
        session = first.headers["x-kefu-session"]
        follow_up = chat(b.url, key, "这款有曜石黑XL吗", session, model)
        assert follow_up.status_code == 200 and follow_up.json()["kefu"]["session_id"] == session
        assert "X1三合一冲锋衣" in follow_up.json()["choices"][0]["message"]["content"], follow_up.text
        alone = chat(b.url, key, "这款有曜石黑XL吗", model=model)  # the same words without the conversation
        assert "X1三合一冲锋衣" not in alone.json()["choices"][0]["message"]["content"]
        assert chat(c.url, other_key, "还有别的颜色吗", session, model).status_code == 404  # bound to its key
        rated = httpx.post(c.url + "/v1/feedback", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                           json={"kind": "rating", "rating": 5, "session_id": session, "customer_id": "C0001"})
        assert rated.status_code == 200, rated.text
        stored = FeedbackStore.open().list(session_id=session)
        assert [t["role"] for t in stored[0].conversation] == ["user", "assistant"] * 2  # turns of a and b

        # an answer cached by a is a hit on c
        asked = chat(a.url, key, "SL-10026多少钱", model=model)
        again = chat(c.url, other_key, "SL-10026多少钱", model=model)
        assert asked.headers["x-kefu-path"] == "light" and again.headers["x-kefu-path"] == "cache", again.text
        assert again.json()["choices"][0]["message"]["content"] == asked.json()["choices"][0]["message"]["content"]

        # one key's burst is counted across the replicas, not per replica
        started = time.monotonic()
        codes = [chat((a, b, c)[i % 3].url, limited_key, "怎么退货", model=model).status_code for i in range(60)]
        refill = LIMITED["rate_limit_per_s"] * (time.monotonic() - started)
        assert set(codes) == {200, 429}
        assert LIMITED["rate_limit_burst"] <= codes.count(200) <= LIMITED["rate_limit_burst"] + refill + 1, codes
        assert all(code == 429 for code in codes[codes.count(200) + int(refill) + 1:])  # refused on every replica


ROUNDS = 10
CLIENTS = 6


def test_a_replica_killed_mid_load_loses_nothing_acknowledged(fleet_env):
    """Clients talk round-robin over the three replicas, each its own conversation, rating every answer; replica 1
    is SIGKILLed when a third of the work is done. A client whose request fails on it goes to the next replica with
    the same session id."""
    state_env, root = fleet_env
    keys = [new_key(f"load-{i}") for i in range(CLIENTS)]
    questions = ["SL-10021多少钱", "这款有曜石黑XL吗", "怎么退货", "发什么快递", "SL-10032有卡其色L码吗"]
    with replicas(3, root, state_env) as fleet:
        model = served_model(fleet[0].url, keys[0])
        acknowledged: list[int] = []
        answered: list[tuple[int, int, str]] = []
        rerouted: list[str] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            key, session, turn = keys[n], None, n  # clients start on different replicas
            with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:

                def send(path: str, body: dict) -> httpx.Response:
                    nonlocal turn
                    for _ in range(2 * len(fleet)):
                        url = fleet[turn % len(fleet)].url
                        turn += 1
                        try:
                            response = http.post(url + path, json=body)
                        except httpx.TransportError as exc:  # the replica is gone: the next one
                            with lock:
                                rerouted.append(type(exc).__name__)
                            continue
                        if response.status_code < 500:
                            return response
                    raise AssertionError(f"no replica answered {path}")

                try:
                    for i in range(ROUNDS):
                        body = {"model": model, "customer_id": "C0001",
                                "messages": [{"role": "user", "content": questions[i % len(questions)]}]}
                        if session:
                            body["session_id"] = session
                        reply = send("/v1/chat/completions", body)
                        assert reply.status_code == 200, reply.text
                        session = reply.json()["kefu"]["session_id"]
                        rated = send("/v1/feedback", {"kind": "rating", "rating": 5, "session_id": session,
                                                      "customer_id": "C0001"})
                        assert rated.status_code == 200, rated.text
                        with lock:
                            acknowledged.append(rated.json()["id"])
                            answered.append((n, i, session))
                except Exception as exc:  # noqa: BLE001 - reported by the test below
                    with lock:
                        failures.append(f"client {n}: {exc}")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < CLIENTS * ROUNDS // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        fleet[1].kill()
        killed_after = len(acknowledged)
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        assert len(answered) == CLIENTS * ROUNDS  # every client's every turn was answered
        assert killed_after < CLIENTS * ROUNDS and rerouted, "the kill came after the load or met no request"
        # each client's conversation went on across the kill in its one session
        assert all(len({s for c, _, s in answered if c == n}) == 1 for n in range(CLIENTS))
        stored = FeedbackStore.open()
        assert set(acknowledged) <= stored.ids() and len(set(acknowledged)) == CLIENTS * ROUNDS
        for n in range(CLIENTS):
            session = next(s for c, _, s in answered if c == n)
            assert len(stored.list(session_id=session)) >= ROUNDS
