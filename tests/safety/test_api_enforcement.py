"""Every state-changing Python API function authorises the caller's key and audits that key (issue 19, Security 1).

The checks live in the API the CLI calls, so a script importing kefu cannot skip them: with keys in this
``$KEFU_HOME``, no key / an unknown key / a key lacking the permission raises PermissionDenied and changes nothing;
the right key does the work and the audit entries name its id and name, not the OS user.
"""

from __future__ import annotations

import csv
import getpass
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kefu.config import load_config
from kefu.data.pipeline import prepare
from kefu.kg.store import KnowledgeGraph
from kefu.loop.dataset import build_dataset
from kefu.loop.feedback import FeedbackStore
from kefu.loop.monthly import run_round
from kefu.loop.registry import Registry
from kefu.loop.retrain import retrain
from kefu.safety import audit, consent
from kefu.safety.keys import (KeyStore, PermissionDenied, Principal, acting_as, authorize, current_principal,
                              local_principal)
from kefu.testing import make_dialogues, make_model_dir, write_jsonl

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
UNKNOWN_KEY = "kefu_000000000000_" + "x" * 40
SKU = "SL-10021"


@pytest.fixture
def keys(monkeypatch) -> dict[str, tuple[str, Principal]]:
    """A home with keys: the first (admin) on the bootstrap rule, the others created by that admin."""
    monkeypatch.delenv("KEFU_KEY", raising=False)
    store = KeyStore.open()
    made = {"admin": store.create("admin", "ops")}
    with acting_as(made["admin"][1]):
        for role, name in (("data-engineer", "etl"), ("trainer", "ml"), ("agent", "desk"),
                           ("customer-app", "web")):
            made[role] = store.create(role, name)
    return made


def _callers(keys, allowed: str, lacking: str):
    """(label, KEFU_KEY value or None) for each refused caller: no key, unknown key, a role lacking the permission."""
    return [("no key", None), ("unknown key", UNKNOWN_KEY), (f"{lacking} key", keys[lacking][0])]


def _use(monkeypatch, key: str | None) -> None:
    if key is None:
        monkeypatch.delenv("KEFU_KEY", raising=False)
    else:
        monkeypatch.setenv("KEFU_KEY", key)


def _last(action: str) -> dict:
    found = [e for e in audit.entries() if e["action"] == action]
    assert found, f"no {action} audit entry"
    return found[-1]


def _names_key(entry: dict, principal: Principal) -> None:
    assert entry["actor"] == f"key:{principal.key_id}:{principal.name}"
    assert getpass.getuser() not in entry["actor"]


# --------------------------------------------------------------------------------------------- knowledge graph
def _cheaper_shop(tmp_path: Path) -> Path:
    shop = tmp_path / "shop"
    shutil.copytree(SHOP, shop)
    rows = list(csv.DictReader((shop / "products.csv").open(encoding="utf-8")))
    for row in rows:
        row["price_fen"] = "100"
    with (shop / "products.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return shop


def test_kg_import_needs_kg_write_and_is_audited_as_the_key(keys, tmp_path, monkeypatch):
    kg = KnowledgeGraph.open()
    with acting_as(keys["admin"][1]):
        kg.import_path(SHOP)
    price = kg.product(SKU).price_fen
    cheaper = _cheaper_shop(tmp_path)
    imports = len([e for e in audit.entries() if e["action"] == "kg.import"])
    for label, key in _callers(keys, "data-engineer", "trainer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            kg.import_path(cheaper, replace=True)
        assert KnowledgeGraph.open().product(SKU).price_fen == price, label  # nothing changed
    assert len([e for e in audit.entries() if e["action"] == "kg.import"]) == imports
    _use(monkeypatch, keys["data-engineer"][0])
    kg.import_path(cheaper, replace=True)
    assert KnowledgeGraph.open().product(SKU).price_fen == 100
    _names_key(_last("kg.import"), keys["data-engineer"][1])


def test_a_scratch_graph_needs_no_kg_write(keys, monkeypatch):
    """A process's private throwaway graph (train as you serve, evaluations) changes no shared state."""
    _use(monkeypatch, keys["trainer"][0])
    scratch = KnowledgeGraph.scratch()
    folder = scratch._scratch
    scratch.import_path(SHOP)
    assert scratch.product(SKU) is not None
    scratch.close()
    assert not folder.exists()
    with pytest.raises(PermissionDenied, match="kg:write"):
        KnowledgeGraph.open().import_path(SHOP)


def test_cli_kg_import_with_an_unknown_key_exits_nonzero_and_changes_nothing(tmp_path, kefu_home):
    """The issue's repro, on a fresh install (no key ever created): an unknown key is refused all the same."""
    env = {**os.environ, "KEFU_HOME": str(kefu_home), "KEFU_KEY": "kefu_000000000000_x"}
    env.pop("KEFU_ACTOR", None)
    result = subprocess.run([sys.executable, "-m", "kefu.cli", "kg", "import", str(SHOP)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown or revoked API key" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert KnowledgeGraph.open().stats().get("products", 0) == 0
    denied = _last("access.denied")
    assert denied["object"] == "kg:write" and denied["details"]["reason"].startswith("$KEFU_KEY holds an unknown")
    assert not KeyStore.exists()  # refusing the key created no key store


# ------------------------------------------------------------------------------------------------------ prepare
def _raw(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "raw" / "logs.jsonl", make_dialogues(12, seed=4))


def test_prepare_needs_data_write_and_carries_consent(keys, tmp_path, monkeypatch):
    raw = _raw(tmp_path)
    config = load_config(None, {"prepare.augment": False, "prepare.workers": 1}).prepare
    for label, key in _callers(keys, "data-engineer", "trainer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            prepare([raw], tmp_path / "out", config)
        assert not (tmp_path / "out").exists(), label
    assert not [e for e in audit.entries() if e["action"] == "prepare"]
    _use(monkeypatch, keys["data-engineer"][0])
    consent.register(raw, source="tests", legal_basis="contract", consent=False)
    prepare([raw], tmp_path / "out", config)
    _names_key(_last("prepare"), keys["data-engineer"][1])
    # every caller of the API gets the sources' record passed on to the splits (not only `kefu prepare`)
    record = consent.lookup(tmp_path / "out" / "train.jsonl")
    assert record and record["legal_basis"] == "contract" and record["source"] == "derived:tests"
    assert record["registered_by"] == keys["data-engineer"][1].actor
    assert consent.problem(record, tmp_path / "out" / "train.jsonl") is None


def test_prepare_without_a_consent_record_registers_nothing(tmp_path):
    """Fresh install (bootstrap): prepare runs as the OS user; unregistered inputs give unregistered outputs."""
    raw = _raw(tmp_path)
    prepare([raw], tmp_path / "out", load_config(None, {"prepare.augment": False}).prepare)
    assert consent.lookup(tmp_path / "out" / "train.jsonl") is None
    assert _last("prepare")["actor"] == local_principal().actor


# ------------------------------------------------------------------------------------------------ consent, keys
def test_consent_register_needs_data_write(keys, tmp_path, monkeypatch):
    raw = _raw(tmp_path)
    for label, key in _callers(keys, "data-engineer", "trainer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            consent.register(raw, source="s", legal_basis="contract", consent=True)
        assert consent.records() == [], label
    for label, key in _callers(keys, "data-engineer", "agent"):  # inherit: data:write or model:train
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            consent.inherit(tmp_path / "raw", [raw])
    _use(monkeypatch, keys["data-engineer"][0])
    row = consent.register(raw, source="s", legal_basis="contract", consent=True)
    assert row["registered_by"] == keys["data-engineer"][1].actor
    _names_key(_last("consent.register"), keys["data-engineer"][1])


def test_key_management_needs_keys_admin(keys, monkeypatch):
    store = KeyStore.open()
    before = store.list()
    for label, key in _callers(keys, "admin", "data-engineer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            store.create("admin", "intruder")
        with pytest.raises(PermissionDenied):
            store.revoke(keys["admin"][1].key_id)
        assert store.list() == before, label
    _use(monkeypatch, keys["admin"][0])
    _, made = store.create("auditor", "aud")
    store.revoke(made.key_id)
    _names_key(_last("keys.create"), keys["admin"][1])
    _names_key(_last("keys.revoke"), keys["admin"][1])


# ------------------------------------------------------------------------------------------------ train, loop
@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return make_model_dir(tmp_path / "model")


def _train_config(model: Path):
    from kefu.train.config import TrainConfig

    return TrainConfig(model=str(model), max_steps=1, batch_size=4, max_len=128, save_steps=0, tensorboard=False)


def test_train_needs_model_train_and_consent_inside_the_api(keys, tiny_model, tmp_path, monkeypatch):
    from kefu.train.dp import train_dp
    from kefu.train.trainer import train

    data = write_jsonl(tmp_path / "data" / "train.jsonl", make_dialogues(8, seed=5))
    config = _train_config(tiny_model)
    for label, key in _callers(keys, "trainer", "data-engineer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            train(config, data, tmp_path / "run", progress=False, consent_override="x")
        with pytest.raises(PermissionDenied):
            train_dp(config, data, tmp_path / "dp", epsilon=8, delta=1e-5, progress=False, consent_override="x")
        assert not (tmp_path / "run").exists() and not (tmp_path / "dp").exists(), label
    _use(monkeypatch, keys["trainer"][0])
    # the consent check is part of train() itself: no record and no reason → refused before anything is loaded
    with pytest.raises(Exception, match="training data refused"):
        train(config, data, tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="training data refused"):
        train_dp(config, data, tmp_path / "dp", epsilon=8, delta=1e-5, progress=False)
    assert not (tmp_path / "run").exists()
    report = train(config, data, tmp_path / "run", progress=False, consent_override="tests: synthetic dialogues")
    assert report["steps"] == 1
    trainer = keys["trainer"][1]
    override = _last("consent.override")
    _names_key(override, trainer)
    assert override["details"]["reason"] == "tests: synthetic dialogues"
    _names_key(_last("train"), trainer)

    # the model registry and exports need model:deploy: the trainer cannot deploy what it trained
    registry = Registry()
    for label, key in _callers(keys, "admin", "trainer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            registry.register(tmp_path / "run" / "adapter", base_model=str(tiny_model))
        assert registry.versions() == [], label
    _use(monkeypatch, keys["trainer"][0])
    from kefu.loop import export

    for call in (lambda: export.vllm_adapter(tmp_path / "run", tmp_path / "vllm"),
                 lambda: export.merge(tmp_path / "run", tmp_path / "merged"),
                 lambda: export.int8(tmp_path / "merged", tmp_path / "int8"),
                 lambda: export.trim_vocab(tmp_path / "run", tmp_path / "data", tmp_path / "vocab")):
        with pytest.raises(PermissionDenied, match="model:deploy"):
            call()
    assert not any((tmp_path / name).exists() for name in ("vllm", "merged", "int8", "vocab"))
    admin = keys["admin"][1]
    _use(monkeypatch, keys["admin"][0])
    for _ in range(2):
        registry.register(tmp_path / "run" / "adapter", base_model=str(tiny_model))
    registry.promote("v1")
    registry.promote("v2")
    _use(monkeypatch, keys["trainer"][0])
    with pytest.raises(PermissionDenied):
        registry.rollback()
    with pytest.raises(PermissionDenied):
        registry.promote("v1")
    assert registry.current()["version"] == "v2"
    _use(monkeypatch, keys["admin"][0])
    assert registry.rollback()["version"] == "v1"
    for action in ("model.register", "model.promote"):
        _names_key(_last(action), admin)
    export.vllm_adapter(tmp_path / "run", tmp_path / "vllm")
    _names_key(_last("export.vllm"), admin)


def test_retrain_and_the_monthly_round_need_model_train(keys, tmp_path, monkeypatch):
    old = tmp_path / "old"
    write_jsonl(old / "train.jsonl", make_dialogues(4, seed=2))
    write_jsonl(old / "test.jsonl", make_dialogues(2, seed=3))
    for label, key in _callers(keys, "trainer", "data-engineer"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            retrain(old, old, tmp_path / "retrain")
        with pytest.raises(PermissionDenied):
            run_round(old, tmp_path / "round")
        assert not (tmp_path / "retrain").exists() and not (tmp_path / "round").exists(), label
    assert not Registry().path.exists()


def test_feedback_dataset_needs_feedback_read(keys, tmp_path, monkeypatch):
    store = FeedbackStore.open()
    store.add({"kind": "correction", "session_id": "s1", "correction": "有的亲，M码有货。",
               "conversation": [{"role": "user", "content": "有M码吗"}, {"role": "assistant", "content": "不清楚"}]})
    records = store.list()
    for label, key in _callers(keys, "agent", "customer-app"):
        _use(monkeypatch, key)
        with pytest.raises(PermissionDenied):
            build_dataset(records, tmp_path / "fb")
        assert not (tmp_path / "fb").exists(), label
    _use(monkeypatch, keys["agent"][0])
    assert build_dataset(records, tmp_path / "fb")["kept"] == 1
    _names_key(_last("feedback.dataset"), keys["agent"][1])


# ------------------------------------------------------------------------------------------- the acting principal
def test_acting_as_is_scoped_to_its_block_and_thread(keys, monkeypatch):
    monkeypatch.setenv("KEFU_KEY", keys["agent"][0])  # acting_as wins over $KEFU_KEY inside the block
    engineer = keys["data-engineer"][1]
    seen = {}

    def other_thread():
        seen["principal"] = current_principal()
        seen["actor"] = audit.default_actor()

    with acting_as(engineer):
        assert authorize("data:write") == engineer and audit.default_actor() == engineer.actor
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen["principal"] is None and seen["actor"] != engineer.actor  # no leak into another thread
    assert current_principal() is None and not os.environ.get("KEFU_ACTOR")  # nothing written to the environment
    assert authorize("chat") == keys["agent"][1]
    with pytest.raises(PermissionDenied):
        authorize("data:write")


def test_kefu_actor_is_the_last_fallback(monkeypatch):
    monkeypatch.setenv("KEFU_ACTOR", "service:legacy")
    assert audit.record("x.y", "o")["actor"] == "service:legacy"
    with acting_as(local_principal()):
        assert audit.record("x.y", "o")["actor"] == local_principal().actor
    assert audit.record("x.y", "o", actor="explicit")["actor"] == "explicit"


def test_bootstrap_home_without_keys_acts_as_the_os_user(tmp_path):
    """Fresh install: every API call is allowed as the OS user (admin), and audited as that user."""
    kg = KnowledgeGraph.open()
    kg.import_path(SHOP)
    assert _last("kg.import")["actor"] == f"user:{getpass.getuser()}"
