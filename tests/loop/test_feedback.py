"""Feedback store: validation, masking, listing, and durability of acknowledged writes across SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from kefu.loop.feedback import FeedbackRecord, FeedbackStore
from kefu.types import KefuError


def test_add_and_list_round_trip(kefu_home):
    store = FeedbackStore.open()
    assert (kefu_home / "feedback.db").exists()
    rid = store.add(FeedbackRecord(kind="rating", session_id="s1", rating=1,
                                   conversation=[{"role": "user", "content": "我的手机号13812345678，订单呢"}]))
    cid = store.add({"kind": "correction", "session_id": "s1", "correction": "正确答案：¥399"})
    hid = store.add({"kind": "handoff", "session_id": "s2", "outcome": "resolved"})
    rows = store.list()
    assert [r.id for r in rows] == [rid, cid, hid]
    assert "13812345678" not in rows[0].conversation[0]["content"]
    assert rows[0].created_at.tzinfo is not None
    assert [r.id for r in store.list(kind="handoff")] == [hid]
    assert store.list(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    assert len(store.list(since=datetime.now(timezone.utc) - timedelta(hours=1))) == 3



def test_correction_is_stored_masked_names_included(kefu_home):
    """Corrections go through the real masker: a name is masked as well as a phone number (the old regex fallback
    masked digits only and stored 张伟 as typed)."""
    store = FeedbackStore.open()
    rid = store.add({"kind": "correction", "session_id": "s1", "correction": "收件人：张伟，电话13812345678",
                     "conversation": [{"role": "user", "content": "我叫张伟，手机13812345678"}]})
    (row,) = [r for r in store.list() if r.id == rid]
    assert row.correction == "收件人：[姓名]，电话[手机号]"
    assert row.conversation[0]["content"] == "我叫[姓名]，手机[手机号]"


def test_wal_and_full_sync(kefu_home):
    store = FeedbackStore.open()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.parametrize("bad", [
    {"kind": "like"}, {"kind": "rating"}, {"kind": "rating", "rating": 0}, {"kind": "correction", "correction": " "},
    {"kind": "handoff", "outcome": "maybe"},
])
def test_invalid_records_are_rejected(bad):
    with pytest.raises(KefuError, match=r"feedback\."):
        FeedbackStore.open().add(bad)


def test_acknowledged_ids_survive_sigkill(tmp_path):
    db = tmp_path / "fb.db"
    script = textwrap.dedent(f"""
        import sys
        from kefu.loop.feedback import FeedbackStore
        store = FeedbackStore.open("sqlite:///{db}")
        for i in range(100000):
            rid = store.add({{"kind": "rating", "rating": 1, "session_id": f"s{{i}}",
                              "conversation": [{{"role": "user", "content": "burst " + str(i)}}]}})
            print(rid, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # ids printed before the kill are acknowledged too
    acked += [int(x) for x in rest.split() if x.strip().isdigit()]
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = FeedbackStore.open(f"sqlite:///{db}").ids()
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
