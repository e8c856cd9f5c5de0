"""End-to-end evaluation: test dialogues → replies (local model or endpoint) → every metric → EVAL/ folder.

``EVAL/metrics.json`` (flat keys), ``EVAL/predictions.jsonl`` (one line per sample with its scores) and
``EVAL/report.html`` (offline, inline SVG charts).

Predictions go to ``EVAL/predictions.jsonl`` as they are made (``kefu.eval.predictions.PredictionWriter``: one
flushed line per sample), so a run that is stopped or killed keeps what it made and a rerun with the same ``out``
generates only the rest (a rerun under other settings — data, model, KG, turn selection, decoding — is refused).
The figures are computed from that file at the end; its lines are then replaced by the scored ones.

With a knowledge graph (``kg``, else the one the run was trained with: ``train.kg_url`` of the run record) each
sample is rendered as training and serving render it (``kefu.eval.records.load_test_samples(kg=)``: the system
prompt with the turn's facts), and the model's slots (``[到手价]``) are filled from the sample's slot values
(``kefu.kg.slots.fill_slots``) before scoring: ``prediction`` is the filled text, ``raw_prediction`` the model's,
``unfilled_slots`` the slots left open (``unfilled_slot_rate``: share of replies with one).

Memory is bounded by one generation batch (see ``kefu.eval.generate``): prompts are capped at the context the run
was trained on (``train.max_len``), batches by padded tokens, and the fluency score asks for the reply's logits only.
"""

from __future__ import annotations

import json
import math
import os
import sys
from array import array
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from kefu.artifacts.dialogues import write_jsonl
from kefu.artifacts.run import TrainRun
from kefu.eval.baseline import baseline_metrics, train_data_of_run
from kefu.eval.business import context_text
from kefu.eval.config import EvalConfig
from kefu.eval.experience import judge_satisfaction
from kefu.eval.generate import (decoding_settings, fit_prompt, generate_via_endpoint, iter_replies,
                                reply_perplexity)
from kefu.eval.metrics import score_predictions
from kefu.eval.predictions import PredictionWriter, Progress, read_predictions
from kefu.eval.records import load_test_samples
from kefu.eval.report import write_report
from kefu.kg.replies import ReplyIndex
from kefu.kg.slots import fill_slots
from kefu.kg.store import KnowledgeGraph
from kefu.train import grounded
from kefu.train.config import TrainConfig
from kefu.train.models import DEFAULT_MODEL, load_model
from kefu.types import KefuError

PREDICTIONS = "predictions.jsonl"
MAX_BATCH_TOKENS = 8192  # padded prompt + new tokens per generation batch (KV cache and attention grow with it)
# what a streamed prediction line holds (scores added at the end are dropped when a resumed file is rescored)
RAW_FIELDS = ("id", "dialogue_id", "turn", "intent", "references", "context", "facts", "customer_id", "date", "slots",
              "prediction", "raw_prediction", "unfilled_slots", "latency_ms", "new_tokens", "prompt_tokens",
              "prompt_cut", "perplexity", "ppl_nll", "ppl_tokens")

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


def write_outputs(out: Path, metrics: dict, rows: list[dict], worst_k: int = 10, others: list[dict] | None = None
                  ) -> None:
    """metrics.json, predictions.jsonl and report.html under ``out``. The predictions file is replaced atomically
    (it is also what a rerun resumes from); ``others`` (lines of samples outside this selection) are kept after
    ``rows``."""
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out / "metrics.json").write_text(json.dumps(clean, ensure_ascii=False, indent=2, default=str) + "\n",
                                      encoding="utf-8")
    tmp = out / (PREDICTIONS + ".tmp")
    write_jsonl(tmp, list(rows) + list(others or []))
    os.replace(tmp, out / PREDICTIONS)
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
                  extra: dict | None = None, judge_transport: Any = None, reply_index: Any = None,
                  others: list[dict] | None = None) -> dict:
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
    write_outputs(Path(out), metrics, rows, worst_k=config.worst_examples, others=others)
    return metrics


def _check_run(run: Path, base_only: bool, model: str | None) -> None:
    """What :func:`load_local_model` will need of ``run``, checked without loading anything."""
    train_run = TrainRun(run)
    if base_only:
        if not train_run.path.is_dir():
            raise KefuError(f"{run}: run folder not found")
    else:
        train_run.require_finished("pass --base-only to evaluate the base model")
    if model is None:
        train_run.base_model()


def _weights_stamp(run: str | Path | None, base_only: bool, model_obj: Any) -> str | None:
    """Which weights make the predictions, so a resume never mixes two models under one ``out``: a given model's
    name and parameter sum (one pass, no copy), or the run adapter's file stamp (retraining into the same run
    changes it)."""
    if model_obj is not None:
        import torch

        with torch.no_grad():
            total = sum(float(p.sum(dtype=torch.float64)) for p in model_obj.parameters())
        name = getattr(getattr(model_obj, "config", None), "name_or_path", None) or "given"
        return f"{name}:{total:.12g}"
    if run is not None and not base_only:
        files = sorted(TrainRun(run).adapter_dir.glob("adapter_model.*"))
        return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files) or None
    return None


def _run_train_record(run: str | Path | None) -> dict:
    """The ``train`` section of ``run``'s record (empty when there is no run or no record)."""
    if run is None:
        return {}
    train_run = TrainRun(run)
    if not train_run.record_file.is_file():
        return {}
    train = train_run.record().get("train")
    return train if isinstance(train, dict) else {}


def _say(message: str) -> None:
    print(f"kefu eval: {message}", file=sys.stderr, flush=True)


def _kg_choice(kg: Any, trained: dict) -> tuple[Any, str | None, str | None]:
    """(the graph to ground on, its label, where it came from): ``kg`` when given, else the run's ``train.kg_url``."""
    if kg is not None:
        label = "given (an open graph)" if isinstance(kg, KnowledgeGraph) else str(kg)
        return kg, label, "--kg"
    url = trained.get("kg_url")
    if not url:
        return None, None, None
    if "://" not in str(url) and not Path(url).exists():
        raise KefuError(f"the run was trained with the knowledge graph {url} (train.kg_url), which is not found "
                        "from here; pass --kg with its path")
    _say(f"grounding on the knowledge graph the run was trained with: {url} (train.kg_url; --kg picks another)")
    return str(url), str(url), "run record (train.kg_url)"


@contextmanager
def _graph(spec: Any) -> Iterator[Any]:
    if spec is None:
        yield None
        return
    with grounded.open_kg(spec) as kg:
        yield kg


def prompt_budget(trained: dict, model: Any, max_new_tokens: int) -> int:
    """Prompt tokens a sample may take: the context the run was trained on (``train.max_len``, else kefu's default),
    within the model's positions, less the reply's ``max_new_tokens``."""
    limit = int(trained.get("max_len") or TrainConfig().max_len)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    return max(16, limit - max_new_tokens)


def _selected_records(path: Path, ids: list[str]) -> tuple[list[dict], list[dict]]:
    """(the raw records of ``ids`` in that order, the file's other lines as they are)."""
    by_id = {str(r["id"]): r for r in read_predictions(path)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KefuError(f"{path}: {len(missing)} samples have no prediction (first {missing[0]!r})")
    chosen = set(ids)
    records = [{k: by_id[i][k] for k in RAW_FIELDS if k in by_id[i]} for i in ids]
    return records, [r for k, r in by_id.items() if k not in chosen]


def _slot_metrics(records: list[dict]) -> dict:
    grounded_recs = [r for r in records if "unfilled_slots" in r]
    if not grounded_recs:
        return {}
    open_ = [len(r["unfilled_slots"]) for r in grounded_recs]
    return {"unfilled_slot_rate": sum(1 for k in open_ if k) / len(open_), "unfilled_slots": sum(open_),
            "filled_slot_replies": sum(1 for r in grounded_recs if r.get("raw_prediction") != r["prediction"])}


def evaluate(data: str | Path, out: str | Path, *, run: str | Path | None = None, model: str | None = None,
             base_only: bool = False, endpoint: str | None = None, api_key: str | None = None, kg: Any = None,
             config: EvalConfig | None = None, model_obj: Any = None, tokenizer: Any = None, progress: bool = True,
             transport: Any = None, judge_transport: Any = None, train_data: str | Path | None = None,
             shop: str | None = None, max_prompt_tokens: int | None = None,
             max_batch_tokens: int | None = MAX_BATCH_TOKENS, stop_after: int | None = None,
             on_record: Callable[[dict], None] | None = None) -> dict | None:
    """Generate a reply for every agent turn of ``data`` (a prepared test.jsonl) and score it; returns metrics.

    When the train data is known (``train_data``, else the file ``run``'s record names) the retrieval baseline over
    it and the stock reply are scored on the same samples (see :mod:`kefu.eval.baseline`).

    The replies come from ``endpoint`` (OpenAI-compatible; ``model`` is the served model's name) when given, else
    from ``model_obj``/``tokenizer`` when given, else from a local model: ``run``'s base + ``run/adapter``, or
    ``model`` (a name or a merged-model folder). Settings come from ``config`` (batch size, decoding, limits).

    ``kg`` (an open graph, URL, ``.db`` or shop folder; default: the run's ``train.kg_url``): grounded prompts and
    slot filling (module docstring); ``shop``: the shop's name in the system prompt (default: the run's
    ``train.shop_name``). Local generation: prompts capped at ``max_prompt_tokens`` (default
    :func:`prompt_budget`), batches at ``max_batch_tokens`` padded tokens. Each prediction is written to
    ``out/predictions.jsonl`` as it is made (``on_record`` sees it then); ``stop_after``: stop after that many new
    predictions without scoring and return None (a partial, resumable run).
    """
    config = config or EvalConfig()
    out = Path(out)
    if run is not None and not endpoint and model_obj is None:
        _check_run(Path(run), base_only, model)  # before anything is written: a bad run fails at once
    trained = _run_train_record(run)
    kg_spec, kg_label, kg_source = _kg_choice(kg, trained)
    shop = shop or trained.get("shop_name") or "本店"
    reply_index, train_file = reply_index_for(train_data, run)
    # the run's exemplars: the past replies of its training data in each grounded prompt, as training showed them
    exemplars = TrainRun(run).exemplars() if run is not None and kg_spec is not None else 0
    exemplar_index = reply_index
    if exemplars and exemplar_index is None and TrainRun(run).replies_file.is_file():
        exemplar_index = ReplyIndex.load(TrainRun(run).replies_file)
    decoding = {"do_sample": config.do_sample, "temperature": config.temperature, "top_p": config.top_p,
                "repetition_penalty": config.repetition_penalty if config.repetition_penalty != 1.0 else None}
    settings = decoding_settings(config.max_new_tokens, **decoding)
    info: dict[str, Any] = {"data": str(data), "batch_size": config.batch_size,
                            "last_turn_only": config.last_turn_only, "kg": kg_label, "kg_source": kg_source,
                            "grounded": kg_spec is not None, "shop_name": shop if kg_spec is not None else None,
                            "exemplars": exemplars if exemplar_index is not None else 0}
    info.update({f"decoding_{k}": v for k, v in settings.items()})
    info["retrieval_train_data"] = str(train_file) if train_file else None
    with _graph(kg_spec) as graph:
        samples = load_test_samples(data, last_turn_only=config.last_turn_only, max_samples=config.max_samples,
                                    kg=graph, shop=shop, replies=exemplar_index, exemplars=info["exemplars"])
        local = tok = None
        if endpoint:
            info.update(source="endpoint", endpoint=endpoint, model=model or "kefu", concurrency=config.concurrency)
        elif model_obj is not None:
            local, tok = model_obj, tokenizer
            info.update(source="local", model=getattr(getattr(local, "config", None), "name_or_path", None) or "given")
        adapter_on = hasattr(model_obj, "peft_config") if model_obj is not None else bool(run and not base_only)
        fixed = {"data": str(Path(data).resolve()), "run": str(run) if run else None, "base_only": base_only,
                 "endpoint": endpoint, "model": model, "kg": kg_label, "shop": shop if kg_spec is not None else None,
                 "last_turn_only": config.last_turn_only, "decoding": settings, "exemplars": info["exemplars"],
                 "perplexity": bool(config.perplexity and not endpoint), "max_prompt_tokens": max_prompt_tokens,
                 "weights": _weights_stamp(run, base_only, model_obj) if not endpoint else None}
        ids = [s["id"] for s in samples]
        with PredictionWriter(out / PREDICTIONS, fixed) as writer:
            pending = [s for s in samples if s["id"] not in writer]
            info["resumed_predictions"] = len(samples) - len(pending)
            if not endpoint and local is None:
                if pending:
                    local, tok, loaded = load_local_model(Path(run) if run else None, model, base_only)
                    info.update(source="local", **loaded)
                else:  # all made already: no model needed to score them
                    info.update(source="local", model=str(model or trained.get("model") or DEFAULT_MODEL),
                                adapter=str(TrainRun(run).adapter_dir) if adapter_on else None)
            del samples
            with Progress(len(ids), "kefu eval", done=len(ids) - len(pending), enabled=progress) as bar:
                def emit(sample: dict, result: Any, extra: dict) -> bool:
                    record = _record(sample, result, extra)
                    writer.write(record)
                    if on_record is not None:
                        on_record(record)
                    bar.advance()
                    return stop_after is not None and writer.written >= stop_after

                if not pending:
                    stopped = False
                elif endpoint:
                    stopped = _by_endpoint(endpoint, pending, emit, model=model, api_key=api_key, config=config,
                                           transport=transport, decoding=decoding)
                else:
                    budget = max_prompt_tokens or prompt_budget(trained, local, config.max_new_tokens)
                    info["max_prompt_tokens"], info["max_batch_tokens"] = budget, max_batch_tokens
                    stopped = _locally(local, tok, pending, emit, config=config, decoding=decoding,
                                       budget=budget, max_batch_tokens=max_batch_tokens)
            if stopped:
                return None
        records, others = _selected_records(out / PREDICTIONS, ids)
        info.update(_generation_info(records, adapter_on, config))
        info.update(_slot_metrics(records))
        return score_records(records, out, kg=graph, config=config, extra=info, judge_transport=judge_transport,
                             reply_index=reply_index, others=others)


def _record(sample: dict, result: Any, extra: dict) -> dict:
    """The prediction line of one sample: the sample (its context as the model saw it), the reply with its slots
    filled from the sample's slot values when the sample is grounded, and generation details."""
    record = {k: v for k, v in sample.items() if k in RAW_FIELDS and k != "context"}
    record["context"] = extra.pop("context", sample["context"])
    text = result.text
    if "slots" in sample:
        filled, unfilled = fill_slots(text, sample["slots"])
        record.update(prediction=filled, raw_prediction=text, unfilled_slots=unfilled)
    else:
        record["prediction"] = text
    record.update(latency_ms=round(result.latency_ms, 3), new_tokens=result.new_tokens, **extra)
    return record


def _by_endpoint(endpoint: str, pending: list[dict], emit: Callable[[dict, Any, dict], bool], *, model: str | None,
                 api_key: str | None, config: EvalConfig, transport: Any, decoding: dict) -> bool:
    class _Stop(Exception):
        pass

    def on_result(i: int, result: Any) -> None:
        if emit(pending[i], result, {}):
            raise _Stop

    try:
        generate_via_endpoint(endpoint, [s["context"] for s in pending], model=model or "kefu", api_key=api_key,
                              concurrency=config.concurrency, timeout_s=config.timeout_s,
                              max_new_tokens=config.max_new_tokens, progress=False, transport=transport,
                              on_result=on_result, **decoding)
    except _Stop:
        return True
    return False


def _locally(model: Any, tokenizer: Any, pending: list[dict], emit: Callable[[dict, Any, dict], bool], *,
             config: EvalConfig, decoding: dict, budget: int, max_batch_tokens: int | None) -> bool:
    """Generate for ``pending`` batch by batch, each batch's lines written before the next starts."""
    prompts, contexts, cut = [], [], []
    for sample in pending:
        ids, kept = fit_prompt(tokenizer, sample["context"], budget)
        prompts.append(array("l", ids))  # 8 bytes a token, not a Python int object each
        contexts.append(kept)
        cut.append(len(kept) < len(sample["context"]))
    for made in iter_replies(model, tokenizer, prompts, config.batch_size, config.max_new_tokens,
                             max_batch_tokens=max_batch_tokens, **decoding):
        ppl = (reply_perplexity(model, tokenizer, [prompts[i] for i, _ in made], [r.text for _, r in made],
                                max_batch_tokens=max_batch_tokens or MAX_BATCH_TOKENS)
               if config.perplexity else [None] * len(made))
        for (i, result), scored in zip(made, ppl):
            extra: dict[str, Any] = {"context": contexts[i], "prompt_tokens": len(prompts[i]), "prompt_cut": cut[i]}
            if scored is not None:
                extra.update(perplexity=scored[0], ppl_nll=scored[1], ppl_tokens=scored[2])
            if emit(pending[i], result, extra):
                return True
            prompts[i] = contexts[i] = None  # done: nothing of it is kept
    return False


def _generation_info(records: list[dict], adapter_on: bool, config: EvalConfig) -> dict:
    info: dict[str, Any] = {}
    if records:
        info["new_tokens_mean"] = sum(r.get("new_tokens") or 0 for r in records) / len(records)
        cut = [r for r in records if r.get("prompt_cut")]
        if any("prompt_cut" in r for r in records):
            info["prompts_cut"] = len(cut)
    if config.perplexity and any("ppl_tokens" in r for r in records):
        nll = sum(r.get("ppl_nll") or 0.0 for r in records)
        tokens = sum(r.get("ppl_tokens") or 0 for r in records)
        info["perplexity"] = math.exp(nll / tokens) if tokens else None
        info["perplexity_model"] = "base (adapter disabled)" if adapter_on else "the evaluated model"
    return info
