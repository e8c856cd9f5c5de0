"""Feedback and the model registry on the shared PostgreSQL database: same behaviour as on SQLite / the JSON file,
acknowledged writes survive the writer's SIGKILL and are seen by a new process, concurrent registrations never reuse
a version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from kefu.loop.feedback import FeedbackStore
from kefu.loop.registry import Registry
from kefu.safety import audit


def _in_new_process(code: str) -> dict:
    """Run ``code`` in a fresh interpreter with this test's environment; its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _adapter(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def test_feedback_round_trips_masked_in_the_shared_database(shared_state, kefu_home):
    store = FeedbackStore.open()
    try:
        assert store.engine.dialect.name == "postgresql"
        rid = store.add({"kind": "correction", "session_id": "s1", "correction": "收件人：张伟，电话13812345678",
                         "conversation": [{"role": "user", "content": "我叫张伟，手机13812345678"}]})
        hid = store.add({"kind": "handoff", "session_id": "s2", "outcome": "resolved"})
        rows = store.list()
        assert [r.id for r in rows] == [rid, hid] and [r.id for r in store.list(kind="handoff")] == [hid]
        assert rows[0].correction == "收件人：[姓名]，电话[手机号]"
        assert rows[0].conversation == [{"role": "user", "content": "我叫[姓名]，手机[手机号]"}]
        assert rows[0].created_at.utcoffset().total_seconds() == 0
    finally:
        store.close()
    assert not (kefu_home / "feedback.db").exists()


def test_acknowledged_feedback_survives_the_writers_sigkill(shared_state):
    writer = textwrap.dedent("""
        from kefu.loop.feedback import FeedbackStore
        store = FeedbackStore.open()
        for i in range(100000):
            print(store.add({"kind": "rating", "rating": 1, "session_id": f"s{i}"}), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    acked += [int(x) for x in proc.stdout.read().split() if x.strip().isdigit()]
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = set(_in_new_process("""
        import json
        from kefu.loop.feedback import FeedbackStore
        print(json.dumps(sorted(FeedbackStore.open().ids())))
    """))
    assert len(acked) >= 40 and set(acked) <= stored, sorted(set(acked) - stored)[:5]


def test_registry_register_promote_rollback_in_the_shared_database(shared_state, kefu_home, tmp_path):
    registry = Registry()
    assert registry.engine is not None and registry.path is None
    registry.register(_adapter(tmp_path / "a1"), base_model="m", metrics={"rougeL": 10.0})
    registry.register(_adapter(tmp_path / "a2"), base_model="m", parent="v1")
    registry.promote("v1")
    registry.promote("v2", reason="better")
    assert registry.current()["version"] == "v2" and registry.get("v1")["status"] == "retired"
    assert registry.get("v1")["metrics"] == {"rougeL": 10.0}
    assert not (kefu_home / "registry.json").exists()
    assert (kefu_home / "adapters" / "v2" / "adapter_config.json").is_file()

    seen = _in_new_process("""
        import json
        from kefu.loop.registry import Registry
        registry = Registry()
        before = registry.current()["version"]
        after = registry.rollback()["version"]
        print(json.dumps({"before": before, "after": after,
                          "statuses": [v["status"] for v in registry.versions()]}))
    """)
    assert seen == {"before": "v2", "after": "v1", "statuses": ["promoted", "retired"]}
    assert registry.current()["version"] == "v1"
    assert [(h["from"], h["to"]) for h in registry._read()["history"]] == [(None, "v1"), ("v1", "v2"), ("v2", "v1")]
    assert [e["object"] for e in audit.search(action="model.")] == ["v1", "v2", "v1", "v2", "v1"]


def test_registrations_from_several_processes_at_once_get_distinct_versions(shared_state, tmp_path):
    go = tmp_path / "go"
    writer = textwrap.dedent(f"""
        import os, sys, time, pathlib
        from kefu.loop.registry import Registry
        registry = Registry()
        adapter = pathlib.Path(sys.argv[1])
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        for i in range(3):
            print(registry.register(adapter, base_model="m", note=f"{{adapter.name}}/{{i}}")["version"], flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(_adapter(tmp_path / f"a{n}"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(3)]
    time.sleep(2)
    go.touch()
    printed = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        printed += out.split()
    assert sorted(printed, key=lambda v: int(v[1:])) == [f"v{n}" for n in range(1, 10)]
    versions = Registry().versions()
    assert [v["version"] for v in versions] == [f"v{n}" for n in range(1, 10)]
    assert sorted(v["note"] for v in versions) == sorted(f"a{n}/{i}" for n in range(3) for i in range(3))
