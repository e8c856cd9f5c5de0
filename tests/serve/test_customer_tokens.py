"""Customer identity (issue 19): a shop's server asserts who the customer is with a signed, expiring customer token
(``POST /v1/customer_tokens``, permission ``customer:assert``); customer data needs it (or a customer-bound key, or a
key with ``customer:assert`` naming the customer). Expired and forged tokens are 401 and audited; a chat turn acts as
its caller in the audit log."""

from __future__ import annotations

import json
import time

import pytest

from kefu.safety import audit
from kefu.safety.keys import (CustomerTokenError, KeyStore, PermissionDenied, _b64, _unb64, acting_as,
                              local_principal)
from kefu.serve.gateway import Authenticator
from serve_support import make_service

ORDER = "1234567890123456"  # serve_support's fake order of C0001, "已发货"
ASK = f"订单{ORDER}到哪了"


@pytest.fixture
def keys():
    store = KeyStore.open()
    made = {"_store": store}
    with acting_as(local_principal()):
        for name, role in (("shop", "shop-backend"), ("app", "customer-app"), ("agent", "agent"),
                           ("admin", "admin")):
            made[name], principal = store.create(role, name)
            made[f"{name}_id"] = principal.key_id
    return made


@pytest.fixture
def service(tiny):
    return make_service(tiny)


@pytest.fixture
def http(service, keys):
    from fastapi.testclient import TestClient

    from kefu.serve.app import create_app  # deferred: heavy (fastapi)

    with TestClient(create_app(service, auth=Authenticator([]))) as client:
        yield client


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def mint(http, key: str, customer: str = "C0001", **extra):
    return http.post("/v1/customer_tokens", json={"customer_id": customer, **extra}, headers=bearer(key))


def ask(http, credential: str, text: str = ASK, **extra):
    return http.post("/v1/chat/completions", headers=bearer(credential),
                     json={"model": "tiny", "messages": [{"role": "user", "content": text}], **extra})


def answer(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def denied() -> list[dict]:
    return [e for e in audit.entries() if e["action"] == "access.denied"]


def test_a_token_from_the_shop_server_unlocks_the_customers_orders(http, keys):
    r = mint(http, keys["shop"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "customer_token" and body["token_type"] == "Bearer" and body["customer_id"] == "C0001"
    assert body["expires_in"] == 3600 and abs(body["expires_at"] - time.time() - 3600) < 5
    token = body["token"]
    assert token.startswith(f"kct1.{keys['shop_id']}.") and keys["shop"] not in token
    assert "已发货" in answer(ask(http, token))
    # the token's own customer may be named again; another customer is 403 (audited)
    assert "已发货" in answer(ask(http, token, customer_id="C0001"))
    before = len(denied())
    for field in ("customer_id", "user"):
        r = ask(http, token, **{field: "C0002"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "customer_mismatch"
    assert len(denied()) == before + 2
    created = [e for e in audit.entries() if e["action"] == "customer_token.create"]
    assert created[-1]["object"] == "customer:C0001" and created[-1]["actor"] == f"key:{keys['shop_id']}:shop"
    assert token not in json.dumps(created)  # the audit log never holds a usable token


def test_an_unbound_key_naming_a_customer_gets_no_order_data(http, keys):
    """The hole of issue 19: an unbound customer-app key named any customer and read their parcel."""
    for field in ("customer_id", "user"):
        text = answer(ask(http, keys["app"], **{field: "C0001"}))
        assert "已发货" not in text and "登录" in text
    # the same question under the shop's server key (customer:assert) or a customer-bound key is answered
    assert "已发货" in answer(ask(http, keys["shop"], customer_id="C0001"))
    with acting_as(local_principal()):
        bound, _ = keys["_store"].create("customer-app", "c1-app", customer_id="C0001")
    assert "已发货" in answer(ask(http, bound))


def test_who_may_mint_tokens(http, keys):
    assert mint(http, keys["admin"]).status_code == 200
    for name in ("app", "agent"):
        r = mint(http, keys[name])
        assert r.status_code == 403 and "customer:assert" in r.json()["error"]["message"]
    token = mint(http, keys["shop"]).json()["token"]
    r = mint(http, token, "C0002")  # a customer cannot mint a token for another customer (or itself)
    assert r.status_code == 403
    assert http.post("/v1/adapters", json={"name": "x", "path": "/tmp"}, headers=bearer(token)).status_code == 403
    admin_token = mint(http, keys["admin"]).json()["token"]  # whatever minted it, a token grants chat only
    assert http.post("/v1/adapters", json={"name": "x", "path": "/tmp"},
                     headers=bearer(admin_token)).status_code == 403
    for bad in ({"customer_id": ""}, {"customer_id": "C1", "ttl_s": 30}, {"customer_id": "C1", "ttl_s": 10 ** 6},
                {"customer_id": "C1", "role": "admin"}):
        assert http.post("/v1/customer_tokens", json=bad, headers=bearer(keys["shop"])).status_code == 400, bad
    assert mint(http, keys["shop"], ttl_s=60).json()["expires_in"] == 60


def _forge(token: str, customer: str) -> str:
    prefix, key_id, _, expires, signature = token.split(".")
    return ".".join((prefix, key_id, _b64(customer.encode()), expires, signature))


def test_expired_and_forged_tokens_are_401_and_audited(http, keys):
    store = keys["_store"]
    with acting_as(store.authenticate(keys["shop"])):
        expired, _ = store.mint_customer_token("C0001", ttl_s=3600, now=time.time() - 3601)
        good, expires = store.mint_customer_token("C0001")
    prefix, key_id, customer, exp, signature = good.split(".")
    later = ".".join((prefix, key_id, customer, str(int(exp) + 86400), signature))  # extended by hand
    other_pepper = KeyStore.__new__(KeyStore)
    other_pepper._pepper = b"not the server's pepper"
    foreign = ".".join(good.split(".")[:4]) + "." + other_pepper._token_mac(".".join(good.split(".")[:4]))
    cases = {"expired": expired, "bad signature": _forge(good, "C0002"), "extended": later, "foreign": foreign,
             "malformed": "kct1.abc", "truncated": good[:-3]}
    before = len(denied())
    for name, token in cases.items():
        for stream in (False, True):
            r = ask(http, token, stream=stream)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", name
            assert "已发货" not in r.text
            code = r.json()["error"]["code"]
            assert code == ("customer_token_expired" if name == "expired" else "invalid_customer_token"), name
    entries = denied()[before:]
    assert len(entries) == 2 * len(cases)
    reasons = [e["details"]["reason"] for e in entries]
    assert reasons[:2] == ["customer token: expired"] * 2
    assert reasons[2:4] == ["customer token: bad signature"] * 2 and reasons[-4:-2] == ["customer token: malformed"] * 2
    assert entries[0]["details"]["key_id"] == keys["shop_id"] and entries[0]["details"]["status"] == 401
    assert all(e["details"]["path"] == "/v1/chat/completions" for e in entries)
    assert good not in json.dumps(entries) and expired not in json.dumps(entries)
    # the untouched token still works; revoking the shop's key revokes the tokens it minted
    assert expires > time.time() and "已发货" in answer(ask(http, good))
    with acting_as(local_principal()):
        store.revoke(keys["shop_id"])
    r = ask(http, good)
    assert r.status_code == 401 and denied()[-1]["details"]["reason"] == "customer token: minting key revoked or unknown"


def test_the_python_api_checks_the_permission_and_the_token():
    store = KeyStore.open()
    with acting_as(local_principal()):
        app_key, app = store.create("customer-app", "web")
        _, shop = store.create("shop-backend", "backend")
    with acting_as(app), pytest.raises(PermissionDenied, match="customer:assert"):
        store.mint_customer_token("C0001")
    with acting_as(shop):
        token, _ = store.mint_customer_token("C 0001/王")  # any id survives the encoding
    principal = store.verify_customer_token(token)
    assert principal.customer_id == "C 0001/王" and principal.key_id == shop.key_id
    assert principal.permissions == {"chat", "feedback:write"}
    assert _unb64(token.split(".")[2]).decode() == "C 0001/王"
    with pytest.raises(CustomerTokenError) as caught:
        store.verify_customer_token(token, now=time.time() + 7200)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_turn_audits_as_its_caller(tiny, keys, stream):
    """Entries written during a turn (the KG tools audit tickets and handoffs) name the calling key, not the OS
    user: the turn runs ``acting_as`` the request's principal, also while an answer streams."""
    from fastapi.testclient import TestClient

    from kefu.serve.app import create_app  # deferred: heavy (fastapi)
    from serve_support import fake_order_lookup

    def audited_lookup(order_no, customer_id, text):
        audit.record("test.tool_call", order_no, details={"customer_id": customer_id})
        return fake_order_lookup(order_no, customer_id, text)

    service = make_service(tiny, order_lookup=audited_lookup)
    with TestClient(create_app(service, auth=Authenticator([]))) as http:
        token = mint(http, keys["shop"]).json()["token"]
        assert "已发货" in ask(http, token, stream=stream).text
        assert "已发货" in ask(http, keys["shop"], customer_id="C0001", stream=stream).text
    calls = [e for e in audit.entries() if e["action"] == "test.tool_call"]
    assert [e["actor"] for e in calls] == [f"key:{keys['shop_id']}:shop/customer-token", f"key:{keys['shop_id']}:shop"]
    assert calls[0]["details"]["customer_id"] == "C0001"
