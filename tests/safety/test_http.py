from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from kefu.safety import audit
from kefu.safety.http import bearer_key, require_permission
from kefu.safety.keys import KeyStore, Principal, acting_as


def _client():
    api = FastAPI()

    @api.post("/chat")
    def chat(principal: Principal = Depends(require_permission("chat"))):
        return {"who": principal.name}

    @api.post("/deploy")
    def deploy(principal: Principal = Depends(require_permission("model:deploy"))):
        return {"who": principal.name}

    return TestClient(api)


def test_bearer_parsing():
    assert bearer_key("Bearer abc") == "abc" and bearer_key("bearer  abc ") == "abc"
    assert bearer_key(None) is None and bearer_key("Basic abc") is None and bearer_key("Bearer ") is None


def test_401_403_200():
    store = KeyStore.open()
    admin_key, admin = store.create("admin", "root")
    with acting_as(admin):
        app_key, _ = store.create("customer-app", "web")
    client = _client()
    missing = client.post("/chat")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/chat", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    assert client.post("/chat", headers={"Authorization": f"Bearer {app_key}"}).json() == {"who": "web"}
    denied = client.post("/deploy", headers={"Authorization": f"Bearer {app_key}"})
    assert denied.status_code == 403 and "model:deploy" in denied.json()["detail"]
    assert client.post("/deploy", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
    with acting_as(admin):
        store.revoke(store.authenticate(app_key).key_id)
    assert client.post("/chat", headers={"Authorization": f"Bearer {app_key}"}).status_code == 401
    assert "access.denied" in [e["action"] for e in audit.entries()]


def test_no_bootstrap_over_http():
    """An empty key store refuses HTTP callers (the fresh-install rule is for the local CLI only)."""
    assert _client().post("/chat").status_code == 401
