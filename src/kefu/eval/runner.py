"""End-to-end evaluation: test dialogues → replies (local model or endpoint) → every metric → EVAL/ folder.

``EVAL/metrics.json`` (flat keys), ``EVAL/predictions.jsonl`` (one line per sample with its scores) and
``EVAL/report.html`` (offline, inline SVG charts).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kefu.artifacts.dialogues import write_jsonl
from kefu.artifacts.run import TrainRun
from kefu.eval.baseline import baseline_metrics, train_data_of_run
from kefu.eval.business import context_text
from kefu.eval.config import EvalConfig
from kefu.eval.experience import judge_satisfaction, perplexity
from kefu.eval.generate import decoding_settings, encode, generate_replies, generate_via_endpoint
from kefu.eval.metrics import score_predictions
from kefu.eval.records import load_test_samples
from kefu.eval.report import write_report
from kefu.kg.replies import ReplyIndex
from kefu.kg.store import KnowledgeGraph
from kefu.train.models import DEFAULT_MODEL, load_model
from kefu.types import KefuError

def open_kg(kg: Any) -> Any:
    """A KnowledgeGraph from a SQLAlchemy URL, a ``.db`` file path, or an already open graph."""
    if kg is None or not isinstance(kg, (str, Path)):
        return kg
    text = str(kg)
    if "://" not in text:
        path = Path(text)
        if not path.exists():
            raise KefuError(f"{path}: knowledge graph database not found")
        text = f"sqlite:///{path.resolve()}"
    return KnowledgeGraph.open(text)


def load_local_model(run: Path | None, model: str | None, base_only: bool) -> tuple[Any, Any, dict]:
    """Base + adapter from a run folder, or a base/merged model by name or path; returns (model, tokenizer, info).

    ``model`` overrides the run's base model; without a run the default model is evaluated."""
    adapter = None
    name = model
    if run is not None:
        train_run = TrainRun(run)
        if base_only:
            if not train_run.path.is_dir():
                raise KefuError(f"{run}: run folder not found")
        else:
            adapter = train_run.require_finished("pass --base-only to evaluate the base model").adapter_dir
        name = name or train_run.base_model()
    name = name or DEFAULT_MODEL
    loaded, tokenizer = load_model(name, adapter=adapter)
    return loaded, tokenizer, {"model": str(name), "adapter": str(adapter) if adapter else None}


def write_outputs(out: Path, metrics: dict, rows: list[dict], worst_k: int = 10) -> None:
    """metrics.json, predictions.jsonl and report.html under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / "metrics.json").write_text(json.dumps(clean, ensure_ascii=False, indent=2, default=str) + "\n",
                                      encoding="utf-8")
    write_jsonl(out / "predictions.jsonl", rows)
    write_report(out, metrics, rows, worst_k=worst_k)


def reply_index_for(train_data: str | Path | None = None, run: str | Path | None = None) -> tuple[Any, Path | None]:
    """(the retrieval baseline's index, the train data it was built from): from ``train_data`` (a prepared folder or
    train.jsonl) when given, else from the train file ``run``'s record names; (None, None) when neither is known."""
    path = Path(train_data) if train_data is not None else (train_data_of_run(run) if run is not None else None)
    if path is None:
        return None, None
    if not path.exists():
        raise KefuError(f"--train-data {path}: not found")
    return ReplyIndex.from_data(path), path


def score_records(records: list[dict], out: Path, *, kg: Any = None, config: EvalConfig | None = None,
                  extra: dict | None = None, judge_transport: Any = None, reply_index: Any = None) -> dict:
    """Score ready predictions and write the EVAL folder; returns the metrics. With ``reply_index`` (a
    :class:`~kefu.kg.replies.ReplyIndex` of the train data) the retrieval and stock-reply baselines are scored on the
    same samples (``retrieval_bleu4``, ``stock_rougeL``, ``vs_retrieval_bleu4`` ..., and each row's ``retrieval``)."""
    config = config or EvalConfig()
    rows: list[dict] = []
    metrics = score_predictions(records, kg=open_kg(kg), config=config, per_sample_out=rows)
    if reply_index is not None:
        baselines, retrieved = baseline_metrics(reply_index, records, metrics)
        metrics.update(baselines)
        for row, reply in zip(rows, retrieved):
            row["retrieval"] = reply
    if config.judge.enabled:
        if not config.judge.endpoint:
            raise KefuError("eval.judge.enabled is true but eval.judge.endpoint is not set")
        subset = rows[:config.judge.max_samples]
        judged, scores = judge_satisfaction(
            config.judge.endpoint, [context_text(r.get("context")) for r in subset], [r["prediction"] for r in subset],
            model=config.judge.model, api_key=os.environ.get(config.judge.api_key_env), concurrency=config.concurrency,
            timeout_s=config.judge.timeout_s, transport=judge_transport)
        metrics.update(judged)
        for row, score in zip(subset, scores):
            row["judge"] = score
    metrics.update(extra or {})
    metrics["evaluated_at"] = datetime.now(timezone.utc).isoformat()
    write_outputs(Path(out), metrics, rows, worst_k=config.worst_examples)
    return metrics


def evaluate(data: str | Path, out: str | Path, *, run: str | Path | None = None, model: str | None = None,
             base_only: bool = False, endpoint: str | None = None, api_key: str | None = None, kg: Any = None,
             config: EvalConfig | None = None, model_obj: Any = None, tokenizer: Any = None, progress: bool = True,
             transport: Any = None, judge_transport: Any = None, train_data: str | Path | None = None) -> dict:
    """Generate a reply for every agent turn of ``data`` (a prepared test.jsonl) and score it; returns metrics.

    When the train data is known (``train_data``, else the file ``run``'s record names) the retrieval baseline over
    it and the stock reply are scored on the same samples (see :mod:`kefu.eval.baseline`).

    The replies come from ``endpoint`` (OpenAI-compatible; ``model`` is the served model's name) when given, else
    from ``model_obj``/``tokenizer`` when given, else from a local model: ``run``'s base + ``run/adapter``, or
    ``model`` (a name or a merged-model folder). Settings come from ``config`` (batch size, decoding, limits).
    """
    config = config or EvalConfig()
    samples = load_test_samples(data, last_turn_only=config.last_turn_only, max_samples=config.max_samples)
    reply_index, train_file = reply_index_for(train_data, run)
    contexts = [s["context"] for s in samples]
    decoding = {"do_sample": config.do_sample, "temperature": config.temperature, "top_p": config.top_p,
                "repetition_penalty": config.repetition_penalty if config.repetition_penalty != 1.0 else None}
    info: dict[str, Any] = {"data": str(data), "batch_size": config.batch_size,
                            "last_turn_only": config.last_turn_only}
    info.update({f"decoding_{k}": v for k, v in decoding_settings(config.max_new_tokens, **decoding).items()})
    info["retrieval_train_data"] = str(train_file) if train_file else None
    local = None
    if endpoint:
        results = generate_via_endpoint(endpoint, contexts, model=model or "kefu", api_key=api_key,
                                        concurrency=config.concurrency, timeout_s=config.timeout_s,
                                        max_new_tokens=config.max_new_tokens, progress=progress, transport=transport,
                                        **decoding)
        info.update(source="endpoint", endpoint=endpoint, model=model or "kefu", concurrency=config.concurrency)
    else:
        if model_obj is not None:
            local, tok = model_obj, tokenizer
            info.update(source="local", model=getattr(getattr(local, "config", None), "name_or_path", None) or "given")
        else:
            local, tok, loaded = load_local_model(Path(run) if run else None, model, base_only)
            info.update(source="local", **loaded)
        results = generate_replies(local, tok, contexts, batch_size=config.batch_size,
                                   max_new_tokens=config.max_new_tokens, progress=progress, **decoding)
    records = []
    for sample, result in zip(samples, results):
        records.append(dict(sample, prediction=result.text, latency_ms=round(result.latency_ms, 3),
                            new_tokens=result.new_tokens))
    if results:
        info["new_tokens_mean"] = sum(r.new_tokens for r in results) / len(results)
    if local is not None and config.perplexity:
        ppl, per = perplexity(local, tok, [encode(tok, c) for c in contexts], [r["prediction"] for r in records],
                              batch_size=config.batch_size)
        info["perplexity"] = ppl
        info["perplexity_model"] = "base (adapter disabled)" if hasattr(local, "peft_config") else "the evaluated model"
        for rec, value in zip(records, per):
            rec["perplexity"] = value
    return score_records(records, Path(out), kg=kg, config=config, extra=info, judge_transport=judge_transport,
                         reply_index=reply_index)
