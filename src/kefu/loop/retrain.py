"""Gated incremental retraining: new data + replayed old data → candidate adapter → evaluate → promote or reject.

The candidate is fine-tuned *from* the serving adapter (``init_adapter``), on the new dialogues plus a seeded
replay sample of the old training set (so it does not forget). Both the serving version and the candidate are scored
on the old test set and the new one; the candidate is promoted only if, for every gate metric on both sets, it is at
least as good as the serving version less ``tolerance``. Every outcome is registered, so a rejected candidate is
kept for inspection and a promoted one can be rolled back.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from kefu.artifacts.dialogues import read_dialogues, write_dialogues
from kefu.artifacts.run import TrainRun
from kefu.eval.config import EvalConfig
from kefu.eval.runner import evaluate
from kefu.loop.config import LoopConfig
from kefu.loop.registry import Registry
from kefu.safety import consent
from kefu.safety.audit import sha256_file
from kefu.safety.keys import authorized
from kefu.train.config import TrainConfig
from kefu.train.models import load_model
from kefu.types import KefuError


def _folder_file(folder: Path, name: str) -> Path:
    return folder / name if folder.is_dir() else folder


def mix_training_data(new_train: Path, old_train: Path, out: Path, *, replay_ratio: float, seed: int) -> dict:
    """Write ``out`` = new dialogues + ``replay_ratio`` × as many old ones (seeded sample); return the counts.

    A missing ``old_train`` means nothing to replay."""
    new = [p.dialogue for p in read_dialogues(new_train)] if Path(new_train).exists() else []
    old = [p.dialogue for p in read_dialogues(old_train)] if Path(old_train).exists() else []
    if not new:
        raise KefuError(f"{new_train}: no new training dialogues; nothing to retrain on")
    replay = random.Random(seed).sample(old, min(len(old), round(len(new) * replay_ratio)))
    write_dialogues(out, new + replay)
    return {"new": len(new), "replayed": len(replay), "old_available": len(old)}


def _score(base: str, adapter: str | None, test: Path, out: Path, config: EvalConfig) -> dict[str, Any]:
    model, tokenizer = load_model(base, adapter)
    return evaluate(test, out, model_obj=model, tokenizer=tokenizer, config=config, progress=False)


def gate(current: dict[str, dict], candidate: dict[str, dict], metrics: list[str], tolerance: float
         ) -> tuple[bool, list[str]]:
    """Whether ``candidate`` holds up on every test set and metric; the reasons when it does not."""
    reasons = []
    for split, scores in candidate.items():
        for key in metrics:
            if key not in scores or key not in current[split]:
                reasons.append(f"{split}: metric {key!r} missing")
            elif scores[key] < current[split][key] - tolerance:
                reasons.append(f"{split}: {key} {scores[key]:.2f} < serving {current[split][key]:.2f} - {tolerance}")
    return not reasons, reasons


@authorized("model:train")
def retrain(new_data: Path, old_data: Path, out: Path, *, train_config: TrainConfig | None = None,
            loop_config: LoopConfig | None = None, registry: Registry | None = None,
            progress: bool = True, consent_override: str | None = None) -> dict[str, Any]:
    """Run one gated retraining round; returns (and writes to ``out/retrain_report.json``) what happened.

    ``new_data`` and ``old_data`` are prepared folders (``train.jsonl``, optional ``test.jsonl``) or train files.
    The serving version comes from the registry; with none, the base model is the bar to clear.

    Needs ``model:train``; the candidate is registered, and promoted when the gate passes, in that key's name. The
    mixed training file inherits the consent record of its sources when they all have one; otherwise training
    refuses it unless ``consent_override`` gives a reason (audited), as ``train`` does.
    """
    from kefu.train.trainer import train  # deferred: heavy (torch)

    loop_config = loop_config or LoopConfig()
    registry = registry or Registry()
    out = Path(out)
    current = registry.current()
    config = (train_config or TrainConfig()).model_copy()
    if current:
        config = config.model_copy(update={"model": current["base_model"], "init_adapter": current["adapter"]})
    new_train, old_train = _folder_file(Path(new_data), "train.jsonl"), _folder_file(Path(old_data), "train.jsonl")
    tests = {name: _folder_file(Path(folder), "test.jsonl") for name, folder in (("old", old_data), ("new", new_data))}
    tests = {name: path for name, path in tests.items() if path.is_file() and path.name == "test.jsonl"}
    if not tests:
        raise KefuError(f"no test.jsonl in {old_data} or {new_data}: the gate needs at least one test set")
    mixed = out / "data" / "train.jsonl"
    mix = mix_training_data(new_train, old_train, mixed, replay_ratio=loop_config.replay_ratio, seed=config.seed)
    consent.carry([p for p in (new_train, old_train) if p.is_file()], [mixed])
    run = TrainRun(out / "run")
    report = train(config, mixed, run.path, progress=progress, consent_override=consent_override)
    candidate = run.require_finished().adapter_dir

    eval_config = EvalConfig(max_samples=loop_config.eval_max_samples, max_new_tokens=loop_config.eval_max_new_tokens,
                             perplexity=False)
    serving_adapter = current["adapter"] if current else None
    before, after = {}, {}
    for name, test in tests.items():
        before[name] = _score(config.model, serving_adapter, test, out / "eval" / f"serving_{name}", eval_config)
        after[name] = _score(config.model, str(candidate), test, out / "eval" / f"candidate_{name}",
                             eval_config)
    passed, reasons = gate(before, after, loop_config.gate_metrics, loop_config.tolerance)
    pick = lambda scores: {k: scores[k] for k in loop_config.gate_metrics if k in scores}  # noqa: E731
    entry = registry._register(candidate, base_model=config.model,
                              metrics={name: pick(scores) for name, scores in after.items()},
                              config=config.model_dump(mode="json"), parent=current["version"] if current else None,
                              data_hashes={"train": sha256_file(mixed),
                                           **{f"test_{n}": sha256_file(p) for n, p in tests.items()}})
    if passed:
        registry._promote(entry["version"], reason="passed the retrain gate")
    else:
        registry._set_status(entry["version"], "rejected", reason="; ".join(reasons))
    result = {"version": entry["version"], "promoted": passed, "reasons": reasons, "data": mix,
              "serving_version": current["version"] if current else None,
              "serving": {n: pick(s) for n, s in before.items()}, "candidate": {n: pick(s) for n, s in after.items()},
              "train": {k: report.get(k) for k in ("steps", "final_loss", "tokens_per_s", "train_seconds")}}
    (out / "retrain_report.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return result
