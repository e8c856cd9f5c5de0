import json
from pathlib import Path

from kefu.config import KefuConfig
from kefu.loop.feedback import FeedbackStore
from kefu.loop.monthly import run_round
from kefu.loop.registry import Registry
from kefu.loop.retrain import gate, mix_training_data

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def test_gate_rules():
    ok, reasons = gate({"old": {"rougeL": 10.0}}, {"old": {"rougeL": 9.6}}, ["rougeL"], 0.5)
    assert ok and not reasons
    ok, reasons = gate({"old": {"rougeL": 10.0}}, {"old": {"rougeL": 9.0}}, ["rougeL"], 0.5)
    assert not ok and "rougeL" in reasons[0]
    ok, reasons = gate({"old": {}}, {"old": {}}, ["bleu4"], 0.5)
    assert not ok and "missing" in reasons[0]


def test_mix_is_seeded(tmp_path, prepared_old):
    new = tmp_path / "new.jsonl"
    new.write_text('{"id":"n1","messages":[]}\n{"id":"n2","messages":[]}\n', encoding="utf-8")
    a = mix_training_data(new, prepared_old / "train.jsonl", tmp_path / "a.jsonl", replay_ratio=2, seed=1)
    b = mix_training_data(new, prepared_old / "train.jsonl", tmp_path / "b.jsonl", replay_ratio=2, seed=1)
    assert a == {"new": 2, "replayed": 4, "old_available": 24}
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def _prepared_shop(out):
    """The bundled sample shop, prepared by the real pipeline (the data a shop's first model was trained on)."""
    from kefu.config import load_config
    from kefu.data.pipeline import prepare

    config = load_config(None, {"prepare.augment": False, "prepare.workers": 1}).prepare
    prepare([SHOP / "dialogues.jsonl"], out, config, catalogue=SHOP / "products.csv")
    return out


def test_monthly_round_end_to_end(tmp_path, tiny_model, tiny_run):
    """On the sample shop: simulated feedback → analysis → tier-2 data → retrain from the serving adapter → gate."""
    old = _prepared_shop(tmp_path / "old")
    registry = Registry()
    registry.register(tiny_run / "adapter", base_model=str(tiny_model))
    registry.promote("v1")
    # simulated month: agents correct the model on held-out shop conversations, customers rate others
    store = FeedbackStore.open()
    held_out = [json.loads(line) for line in (old / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    for i, dialogue in enumerate(held_out[:12]):
        messages = dialogue["messages"]
        last_user = max(j for j, m in enumerate(messages) if m["role"] == "user")
        context = messages[:last_user + 1]
        reference = next((m["content"] for m in messages[last_user + 1:] if m["role"] == "assistant"), "好的亲")
        store.add({"kind": "correction", "session_id": f"s{i}", "correction": reference,
                   "conversation": context + [{"role": "assistant", "content": "亲，这个问题我不清楚。"}]})
        store.add({"kind": "rating", "session_id": f"s{i}", "rating": 5 if i % 2 else -1,
                   "conversation": context + [{"role": "assistant", "content": reference}]})
    config = KefuConfig.model_validate({
        "train": {"model": str(tiny_model), "max_steps": 2, "batch_size": 4, "max_len": 256, "save_steps": 0,
                  "tensorboard": False},
        "loop": {"eval_max_samples": 4, "eval_max_new_tokens": 4, "tolerance": 0.0},
    })
    # feedback-derived data has no consent record of its own: training on it needs an audited reason
    summary = run_round(old, tmp_path / "round", config=config, consent_override="test: simulated feedback")
    assert summary["feedback"] == 24 and summary["failures"] >= 12 and summary["dataset"]["kept"] > 0
    result = summary["retrain"]
    # the gate decides on the scores it reports: promoted exactly when no gate metric fell below the serving one
    scores = [(result["candidate"][s][m], result["serving"][s][m]) for s in result["serving"] for m in ("rougeL", "bleu4")]
    assert len(scores) == 2 and result["promoted"] == all(new >= old for new, old in scores)
    assert result["promoted"] and result["version"] == "v2" and result["serving_version"] == "v1"
    assert result["data"]["replayed"] > 0 and result["data"]["old_available"] > 100
    assert registry.current()["version"] == "v2" and registry.get("v2")["parent"] == "v1"
    assert set(result["candidate"]) == {"old"} and "rougeL" in result["candidate"]["old"]
    assert (tmp_path / "round" / "analysis" / "analysis.html").is_file()
    saved = json.loads((tmp_path / "round" / "round.json").read_text(encoding="utf-8"))
    assert saved["retrain"]["version"] == "v2"
    # a gate that cannot be met rejects the next candidate and keeps v2 serving
    strict = config.model_copy(update={"loop": config.loop.model_copy(update={"tolerance": 0.0,
                                                                              "gate_metrics": ["no_such_metric"]})})
    second = run_round(old, tmp_path / "round2", config=strict, consent_override="test: simulated feedback")
    assert not second["retrain"]["promoted"] and registry.current()["version"] == "v2"
    assert registry.get("v3")["status"] == "rejected"
