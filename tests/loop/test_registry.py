import json

import pytest

from kefu.loop.registry import Registry
from kefu.safety import audit
from kefu.types import KefuError


def _adapter(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def test_register_promote_rollback(tmp_path):
    reg = Registry()
    v1 = reg.register(_adapter(tmp_path / "a1"), base_model="m", metrics={"rougeL": 10.0})
    v2 = reg.register(_adapter(tmp_path / "a2"), base_model="m", parent="v1")
    assert [v["version"] for v in reg.versions()] == ["v1", "v2"]
    assert reg.current() is None
    with pytest.raises(KefuError, match="nothing is promoted"):
        reg.rollback()
    reg.promote("v1")
    with pytest.raises(KefuError, match="first promoted"):
        reg.rollback()
    reg.promote("v2")
    assert reg.current()["version"] == "v2" and reg.get("v1")["status"] == "retired"
    assert reg.rollback()["version"] == "v1"
    assert reg.current()["version"] == "v1" and reg.get("v2")["status"] == "retired"
    # the registered copy is independent of the source folder
    assert (tmp_path / "a1").resolve() != (reg.get("v1")["adapter"])
    assert {e["action"] for e in audit.entries()} >= {"model.register", "model.promote"}
    assert v1["metrics"] == {"rougeL": 10.0} and v2["parent"] == "v1"


def test_rejected_needs_reason_and_bad_adapter(tmp_path):
    reg = Registry()
    reg.register(_adapter(tmp_path / "a1"), base_model="m")
    reg.set_status("v1", "rejected", reason="worse")
    with pytest.raises(KefuError, match="rejected"):
        reg.promote("v1")
    reg.promote("v1", reason="manual override after review")
    with pytest.raises(KefuError, match="adapter_config.json"):
        reg.register(tmp_path, base_model="m")
    with pytest.raises(KefuError, match="no model version"):
        reg.get("v9")
