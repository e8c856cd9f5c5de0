"""One round of the monthly loop, as one function a cron job or systemd timer calls through ``kefu loop monthly``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kefu.config import KefuConfig
from kefu.loop.analyze import analyze, write_report
from kefu.loop.dataset import build_dataset
from kefu.loop.feedback import FeedbackStore
from kefu.loop.retrain import retrain
from kefu.safety import audit
from kefu.safety.keys import authorized


@authorized("model:train")
def run_round(old: Path, work: Path, *, days: int = 31, config: KefuConfig | None = None,
              feedback_url: str | None = None, consent_override: str | None = None) -> dict[str, Any]:
    """Feedback of the last ``days`` → analysis report → tier-2 data → gated retrain. Returns the round's summary.

    A round with no usable new dialogues stops after the analysis (nothing to learn), which is not an error.
    Needs ``model:train`` (and ``feedback:read``, which every role with ``model:train`` has). Feedback-derived data
    has no consent record of its own: ``consent_override`` (audited) is passed to ``retrain``.
    """
    config = config or KefuConfig()
    work = Path(work)
    since = datetime.now(timezone.utc) - timedelta(days=days)
    records = FeedbackStore.open(feedback_url).list(since)
    audit.record("feedback.read", "feedback", details={"records": len(records), "since": since.isoformat()})
    analysis = analyze(records, min_rating_ok=config.loop.min_rating_ok)
    write_report(analysis, work / "analysis")
    old_train = old / "train.jsonl" if old.is_dir() else old
    counts = build_dataset(records, work / "new", previous=[old_train])
    summary: dict[str, Any] = {"feedback": analysis["records"], "failures": analysis["failures"], "dataset": counts}
    if counts["kept"] == 0:
        summary["retrain"] = "skipped: no new dialogues"
    else:
        summary["retrain"] = retrain(work / "new", old, work / "retrain", train_config=config.train,
                                     loop_config=config.loop, progress=False, consent_override=consent_override)
    (work / "round.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return summary
