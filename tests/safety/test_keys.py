import sqlite3

import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety import audit
from kefu.safety.keys import (PERMISSION_MATRIX, PERMISSIONS, ROLES, KeyStore, PermissionDenied, Principal,
                              acting_as, cli_principal, keys_path, local_principal, require)

ADMIN = local_principal()  # tests act as an admin where keys exist and they manage more of them


def test_matrix_covers_roles_and_separates_duties():
    assert set(PERMISSION_MATRIX) == set(ROLES)
    assert PERMISSION_MATRIX["admin"] == set(PERMISSIONS)
    for role, perms in PERMISSION_MATRIX.items():
        assert perms <= set(PERMISSIONS), role
    assert "model:deploy" not in PERMISSION_MATRIX["trainer"]
    assert PERMISSION_MATRIX["customer-app"] == {"chat", "feedback:write"}
    assert "data:read" not in PERMISSION_MATRIX["auditor"] and "audit:read" in PERMISSION_MATRIX["auditor"]


def test_create_authenticate_revoke_and_hashed_at_rest():
    store = KeyStore.open()
    key, principal = store.create("trainer", "bob")
    assert key.startswith("kefu_") and principal.role == "trainer"
    assert store.authenticate(key) == principal
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("kefu_000000000000_" + "x" * 40) is None
    assert store.authenticate("") is None and store.authenticate(None) is None
    secret = key.split("_", 2)[2]
    raw = b"".join(row[0].encode() for row in sqlite3.connect(keys_path()).execute("select digest from api_keys"))
    assert secret.encode() not in raw and secret.encode() not in keys_path().read_bytes()
    with acting_as(ADMIN):  # a key exists now: managing keys needs keys:admin
        store.revoke(principal.key_id)
    assert store.authenticate(key) is None
    assert store.list()[0]["revoked_at"] is not None and store.list(include_revoked=False) == []
    actions = [e["action"] for e in audit.entries()]
    assert actions == ["keys.create", "keys.revoke"]


def test_unknown_role_and_key_id_are_errors():
    store = KeyStore.open()
    with pytest.raises(Exception, match="unknown role"):
        store.create("superuser", "x")
    with pytest.raises(Exception, match="no key with id"):
        store.revoke("nope")


def test_require_enforces_the_matrix_and_audits_denials():
    require(Principal("k", "n", "trainer"), "model:train")
    with pytest.raises(PermissionDenied, match="lacks model:deploy"):
        require(Principal("k", "n", "trainer"), "model:deploy")
    with pytest.raises(PermissionDenied, match="no valid API key"):
        require(None, "chat")
    assert [e["action"] for e in audit.entries()] == ["access.denied"]


def test_cli_principal_bootstrap_then_keys_required(monkeypatch):
    monkeypatch.delenv("KEFU_KEY", raising=False)
    assert cli_principal("data:write").role == "admin"  # fresh install: the OS user
    key, _ = KeyStore.open().create("data-engineer", "dana")
    with pytest.raises(PermissionDenied, match="KEFU_KEY"):
        cli_principal("data:read")
    monkeypatch.setenv("KEFU_KEY", key)
    assert cli_principal("data:write").name == "dana"
    with pytest.raises(PermissionDenied):
        cli_principal("model:train")
    monkeypatch.setenv("KEFU_KEY", "kefu_bogus")
    with pytest.raises(PermissionDenied, match="unknown or revoked"):
        cli_principal()
    # Revoking every key does not reopen the bootstrap door.
    store = KeyStore.open()
    with acting_as(ADMIN):
        for row in store.list():
            store.revoke(row["key_id"])
    monkeypatch.delenv("KEFU_KEY")
    with pytest.raises(PermissionDenied):
        cli_principal("data:read")


def test_seed_from_env_is_idempotent(monkeypatch):
    store = KeyStore.open()
    assert store.seed_from_env() is None
    monkeypatch.setenv("KEFU_API_KEY", "sk-shop-frontend-0123456789")
    first = store.seed_from_env()
    assert first.role == "customer-app" and store.seed_from_env() == first
    assert store.authenticate("sk-shop-frontend-0123456789") == first
    with acting_as(ADMIN):
        store.revoke(first.key_id)
    with pytest.raises(Exception, match="revoked"):
        store.seed_from_env()
    monkeypatch.setenv("KEFU_API_KEY", "short")
    with pytest.raises(Exception, match="too short"):
        store.seed_from_env()


def test_keys_cli_create_list_revoke_audited(monkeypatch):
    monkeypatch.delenv("KEFU_KEY", raising=False)
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--role", "admin", "--name", "ops"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("kefu_")
    assert runner.invoke(app, ["keys", "list"]).exit_code != 0  # keys exist now: KEFU_KEY needed
    monkeypatch.setenv("KEFU_KEY", key)
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and "ops" in listed.output
    second = runner.invoke(app, ["keys", "create", "--role", "auditor", "--name", "aud"])
    aud_id = [row["key_id"] for row in KeyStore.open().list() if row["name"] == "aud"][0]
    assert second.exit_code == 0 and runner.invoke(app, ["keys", "revoke", aud_id]).exit_code == 0
    actions = [e["action"] for e in audit.entries()]
    assert actions == ["keys.create", "access.denied", "keys.list", "keys.create", "keys.revoke"]
    assert all(e["actor"].startswith("key:") for e in list(audit.entries())[2:])


def test_authenticate_odd_strings_never_raise():
    store = KeyStore.open()
    store.create("admin", "a")
    for odd in ["\ud800" * 20, "x" * 10_000, "kefu_" + "a" * 12 + "_" + "\x00" * 30, "Bearer x", "😀" * 20]:
        assert store.authenticate(odd) is None


def test_documented_matrix_matches_code():
    """docs/security.md's permission table is the contract: it must say exactly what the code enforces."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    lines = [line for line in doc.splitlines() if line.startswith("| role \\ permission")]
    assert lines, "permission table missing from docs/security.md"
    header = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    assert header == list(PERMISSIONS)
    table = doc.splitlines()[doc.splitlines().index(lines[0]) + 2:]
    seen = {}
    for line in table:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        seen[cells[0]] = {perm for perm, cell in zip(header, cells[1:]) if cell}
    assert seen == PERMISSION_MATRIX


def test_whoami_and_concurrent_pepper(monkeypatch):
    import threading

    monkeypatch.delenv("KEFU_KEY", raising=False)
    result = CliRunner().invoke(app, ["keys", "whoami"])
    assert result.exit_code == 0 and "role admin" in result.output
    stores, errors = [], []

    def open_store():
        try:
            stores.append(KeyStore.open(keys_path().with_name("race.db")))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({s._pepper for s in stores}) == 1 and len(stores[0]._pepper) == 64


def test_keys_bound_to_a_customer_act_for_that_customer_only():
    from kefu.safety.keys import PermissionDenied, acting_customer

    store = KeyStore.open()
    key, bound = store.create("customer-app", "app-of-C0001", customer_id="C0001")
    assert store.authenticate(key).customer_id == "C0001"
    assert acting_customer(bound, None) == "C0001" and acting_customer(bound, "C0001") == "C0001"
    with pytest.raises(PermissionDenied, match="C0001 only"):
        acting_customer(bound, "C0002")
    with acting_as(ADMIN):
        backend_key, backend = store.create("customer-app", "shop-backend")
    assert store.authenticate(backend_key).customer_id is None
    assert acting_customer(backend, "C0002") == "C0002"
    assert {r["key_id"]: r["customer_id"] for r in store.list()}[bound.key_id] == "C0001"
