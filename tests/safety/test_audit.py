import json

from kefu.safety import audit


def test_chain_verifies_and_detects_edit_insert_delete(kefu_home):
    for i in range(4):
        audit.record("prepare", f"obj{i}", details={"i": i})
    path = audit.audit_path()
    assert audit.verify().ok and audit.verify().entries == 4
    lines = path.read_text(encoding="utf-8").splitlines()

    edited = json.loads(lines[1]); edited["object"] = "tampered"
    path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2

    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2

    path.write_text("\n".join([lines[0], lines[0], *lines[1:]]) + "\n", encoding="utf-8")
    assert audit.verify().first_bad == 2
