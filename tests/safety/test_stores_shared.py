"""API keys and consent records on the shared PostgreSQL database: the same behaviour as the SQLite files, nothing
written under $KEFU_HOME's .db files, and every acknowledged write visible to a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import create_engine, text

from kefu.safety import audit, consent
from kefu.safety.keys import KeyStore, PermissionDenied, authorize
from kefu.types import KefuError


def _in_new_process(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (this test's environment plus ``env``); its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_keys_create_authenticate_revoke_in_the_shared_database(shared_state, postgres_url, kefu_home, monkeypatch):
    store = KeyStore.open()
    assert store.engine.dialect.name == "postgresql" and store.path is None
    assert not KeyStore.exists()
    admin_key, admin = store.create("admin", "ops")  # the fresh-install bootstrap rule holds on postgres too
    assert KeyStore.exists()
    with pytest.raises(PermissionDenied, match="has API keys"):
        authorize("keys:admin")  # the bootstrap rule is closed for every replica once a key exists
    monkeypatch.setenv("KEFU_KEY", admin_key)
    trainer_key, trainer = store.create("trainer", "bob")
    assert store.authenticate(admin_key) == admin and store.authenticate(trainer_key) == trainer

    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        digests = conn.execute(text("SELECT digest FROM api_keys ORDER BY created_at")).scalars().all()
    engine.dispose()
    assert len(digests) == 2 and not any(trainer_key.rsplit("_", 1)[-1] in d for d in digests)
    assert not (kefu_home / "keys.db").exists()

    # a new process (another replica) authenticates the key, revokes it; this process then refuses it too
    seen = _in_new_process(f"""
        import json
        from kefu.safety.keys import KeyStore
        store = KeyStore.open()
        principal = store.authenticate({trainer_key!r})
        store.revoke(principal.key_id)
        print(json.dumps({{"role": principal.role, "name": principal.name, "after": store.authenticate({trainer_key!r})}}))
    """, KEFU_KEY=admin_key)
    assert seen == {"role": "trainer", "name": "bob", "after": None}
    assert store.authenticate(trainer_key) is None and store.authenticate(admin_key) == admin
    assert [k["key_id"] for k in store.list(include_revoked=False)] == [admin.key_id]
    assert {"keys.create", "keys.revoke"} <= {e["action"] for e in audit.entries()}


def test_consent_register_and_check_in_the_shared_database(shared_state, kefu_home, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": []}\n', encoding="utf-8")
    with pytest.raises(KefuError, match="no consent/provenance record"):
        consent.require_consent([data])
    record = consent.register(data, source="taobao-export", legal_basis="consent", consent=True)
    assert consent.require_consent([data])[0]["id"] == record["id"]
    assert not (kefu_home / "consent.db").exists()

    seen = _in_new_process(f"""
        import json
        from kefu.safety import consent
        found = consent.require_consent([{str(data)!r}])
        print(json.dumps({{"id": found[0]["id"], "basis": found[0]["legal_basis"], "all": len(consent.records())}}))
    """)
    assert seen == {"id": record["id"], "basis": "consent", "all": 1}
    assert [e["action"] for e in audit.entries()] == ["consent.register", "consent.check", "consent.check"]


def test_a_replica_with_another_pepper_is_refused_and_one_with_the_shared_pepper_works(shared_state, kefu_home,
                                                                                         tmp_path):
    key, principal = KeyStore.open().create("agent", "desk")  # this home's pepper becomes the store's
    probe = f"""
        import json
        from kefu.safety.keys import KeyStore
        from kefu.types import KefuError
        try:
            print(json.dumps({{"name": KeyStore.open().authenticate({key!r}).name}}))
        except KefuError as exc:
            print(json.dumps({{"refused": str(exc)}}))
    """
    other_home = str(tmp_path / "other-machine")
    refused = _in_new_process(probe, KEFU_HOME=other_home)  # its own, freshly generated pepper
    assert "same $KEFU_KEY_PEPPER" in refused["refused"]
    shared_pepper = (kefu_home / "keys.pepper").read_text(encoding="utf-8").strip()
    assert _in_new_process(probe, KEFU_HOME=other_home, KEFU_KEY_PEPPER=shared_pepper) == {"name": principal.name}
