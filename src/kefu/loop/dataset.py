"""Feedback → incremental training data: corrected answers and reviewed failures become a tier-2 dataset.

A correction replaces the model's answer as the agent turn to learn; a conversation that a human resolved after a
handoff contributes the human's reply when the conversation carries it. Text is PII-masked (the feedback store
already masks; we mask again in case records came from elsewhere) and deduplicated — exactly and near — against
earlier training data, so the retrain learns something new rather than re-weighting what it knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from kefu.artifacts.dialogues import read_dialogues, write_dialogues
from kefu.data.dedup import Deduplicator, MinHasher, exact_key, shingle_text
from kefu.safety import audit
from kefu.safety.keys import authorized
from kefu.text.pii import mask
from kefu.loop.feedback import FeedbackRecord
from kefu.types import Dialogue, Turn


def _dialogue_from(record: FeedbackRecord) -> Dialogue | None:
    conversation = [m for m in record.conversation if m.get("role") in ("system", "user", "assistant")]
    if record.kind == "correction" and record.correction:
        while conversation and conversation[-1]["role"] == "assistant":
            conversation = conversation[:-1]
        conversation = conversation + [{"role": "assistant", "content": record.correction}]
    elif record.kind == "handoff" and record.outcome == "resolved" and record.meta.get("human_reply"):
        conversation = conversation + [{"role": "assistant", "content": record.meta["human_reply"]}]
    else:
        return None
    if not any(m["role"] == "user" for m in conversation):
        return None
    turns = [Turn(m["role"], mask(m["content"])[0]) for m in conversation]
    return Dialogue(id=f"fb{record.id}", messages=turns,
                    meta={"source": "feedback", "line": record.id, "tier": 2, "feedback_kind": record.kind,
                          "session_id": record.session_id})


@authorized("feedback:read")
def build_dataset(records: Iterable[FeedbackRecord], out: Path, *, previous: Iterable[Path] = (),
                  seed_dedup_threshold: float = 0.85) -> dict[str, Any]:
    """Write ``out/train.jsonl`` from feedback; dialogues already present in ``previous`` files are dropped.

    Needs ``feedback:read``; audited as ``feedback.dataset`` in that key's name."""
    hasher = MinHasher()
    dedup = Deduplicator(threshold=seed_dedup_threshold)
    known = 0
    for path in previous:
        for prepared in read_dialogues(path):
            old = prepared.dialogue
            dedup.check(exact_key(old.messages), hasher.signature(shingle_text(old.messages)))
            known += 1
    counts = {"feedback": 0, "usable": 0, "duplicates": 0, "kept": 0, "previous": known}

    def kept() -> Iterator[Dialogue]:
        for record in records:
            counts["feedback"] += 1
            dialogue = _dialogue_from(record)
            if dialogue is None:
                continue
            counts["usable"] += 1
            if dedup.check(exact_key(dialogue.messages), hasher.signature(shingle_text(dialogue.messages))):
                counts["duplicates"] += 1
                continue
            counts["kept"] += 1
            yield dialogue

    out.mkdir(parents=True, exist_ok=True)
    write_dialogues(out / "train.jsonl", kept())
    (out / "report.json").write_text(json.dumps(counts, indent=2), encoding="utf-8")
    audit.record("feedback.dataset", str(out), details=counts)
    return counts
