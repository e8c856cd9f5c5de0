"""CLI commands of the eval stage; `register` adds them to the root `kefu` app.

``kefu eval --run RUN --data TEST.jsonl --out EVAL`` generates and scores; ``kefu eval score PRED.jsonl --out EVAL``
scores ready predictions; ``kefu eval compare EVAL_A EVAL_B`` puts two evaluations side by side;
``kefu eval system --data TEST.jsonl --out EVAL`` sends held-out turns through the serving pipeline (router, KG,
tools, model, verification, synthesis) and scores the system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kefu.config import load_config
from kefu.eval.compare import compare
from kefu.eval.records import load_predictions
from kefu.eval.report import fmt
from kefu.eval.runner import evaluate, reply_index_for, score_records
from kefu.serve.evaluate import evaluate_system
from kefu.types import KefuError

eval_app = typer.Typer(invoke_without_command=True, add_completion=False,
                       help="Evaluate a model: similarity (LLaMA-Factory + sacreBLEU/chrF), business, experience.")

SUMMARY_KEYS = ("n_samples", "bleu4", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf", "human_pct_bleu4",
                "key_fact_accuracy", "intent_accuracy", "resolution_rate", "handoff_rate", "latency_p50_ms",
                "latency_p95_ms", "compliance_violation_rate", "pii_echo_rate", "perplexity", "distinct_2",
                "repeat_4gram_rate", "judge_satisfaction", "retrieval_bleu4", "retrieval_rougeL", "vs_retrieval_bleu4",
                "vs_retrieval_rougeL", "consensus_bleu4", "consensus_rougeL", "vs_consensus_bleu4",
                "vs_consensus_rougeL", "stock_bleu4", "stock_rougeL")


def _config(config_file: Optional[Path], overrides: dict):
    return load_config(config_file, {f"eval.{k}": v for k, v in overrides.items()}).eval


def _judge(url: Optional[str], model: Optional[str]) -> dict:
    """Config overrides that switch the satisfaction judge on."""
    return {"judge.enabled": True, "judge.endpoint": url, "judge.model": model} if url else {}


def _print_summary(metrics: dict, out: Path) -> None:
    Console().print(_metrics_table(f"kefu eval → {out}", metrics, SUMMARY_KEYS))


def _metrics_table(title: str, metrics: dict, keys) -> Table:
    """The metrics named in ``keys`` that ``metrics`` holds, as a two-column table."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        if metrics.get(key) is not None:
            table.add_row(key, fmt(metrics[key]))
    return table


@eval_app.callback()
def eval_main(
    ctx: typer.Context,
    run: Optional[Path] = typer.Option(None, "--run", help="Train output folder (adapter/ and config.yaml)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared test.jsonl (dialogues)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for metrics.json, predictions, report."),
    base_only: bool = typer.Option(False, "--base-only", help="Evaluate the run's base model without the adapter."),
    model: Optional[str] = typer.Option(None, "--model", help="Base or merged model (name or folder); with "
                                        "--endpoint, the served model's name."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL, e.g. "
                                           "http://localhost:8000/v1 (vLLM, kefu serve)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="KEFU_EVAL_API_KEY", help="Endpoint API key."),
    kg: Optional[str] = typer.Option(None, "--kg", help="Knowledge graph (SQLAlchemy URL or .db file) for key facts."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", min=1, help="Evaluate only the first N samples."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Generation batch size (default 8)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Default 64."),
    last_turn_only: Optional[bool] = typer.Option(None, "--last-turn-only/--all-turns",
                                                  help="Score only each dialogue's last agent turn."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Endpoint requests in flight."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-request timeout in seconds (endpoint)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
    judge: Optional[str] = typer.Option(None, "--judge", help="OpenAI-compatible URL of a satisfaction judge "
                                        "(off by default; key from $KEFU_JUDGE_API_KEY)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge's model name."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Prepared train data (folder or train.jsonl): "
                                              "also score the retrieval and stock-reply baselines over it (default: "
                                              "the data the run's record names)."),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml)."),
):
    """Generate a reply for every agent turn of TEST.jsonl and score it (or use a subcommand)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config_file": config_file, "kg": kg, "judge": judge, "judge_model": judge_model,
                   "train_data": train_data}
        return
    if data is None and out is None and run is None and endpoint is None and model is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if data is None or out is None:
        raise KefuError("kefu eval needs --data TEST.jsonl and --out EVAL (or a subcommand: score, compare)")
    if run is None and endpoint is None and model is None:
        raise KefuError("kefu eval needs --run RUN, --model M or --endpoint URL to generate replies")
    cfg = _config(config_file, {"max_samples": max_samples, "batch_size": batch_size,
                                "max_new_tokens": max_new_tokens, "last_turn_only": last_turn_only,
                                "concurrency": concurrency, "timeout_s": timeout, **_judge(judge, judge_model)})
    metrics = evaluate(data, out, run=run, model=model, base_only=base_only, endpoint=endpoint, api_key=api_key,
                       kg=kg, config=cfg, progress=progress, train_data=train_data)
    _print_summary(metrics, out)


@eval_app.command("score")
def score_cmd(
    ctx: typer.Context,
    predictions: Path = typer.Argument(..., help="JSONL: prediction, references (list), optional id, intent, "
                                       "predicted_intent, facts, latency_ms, context."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    references: Optional[Path] = typer.Option(None, "--references", help="Match predictions by id to this file: a "
                                              "prepared test.jsonl (ids DIALOGUE#TURN) or JSONL with id + references."),
    kg: Optional[str] = typer.Option(None, "--kg", help="Knowledge graph for key facts."),
    judge: Optional[str] = typer.Option(None, "--judge", help="OpenAI-compatible URL of a satisfaction judge."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The judge's model name."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Prepared train data: also score the "
                                              "retrieval and stock-reply baselines on the predictions' contexts."),
):
    """Score ready predictions (no model needed)."""
    parent = ctx.obj or {}
    reply_index, train_file = reply_index_for(train_data or parent.get("train_data"))
    cfg = _config(parent.get("config_file"), _judge(judge or parent.get("judge"),
                                                     judge_model or parent.get("judge_model")))
    records = load_predictions(predictions, references)
    metrics = score_records(records, out, kg=kg or parent.get("kg"), config=cfg,
                            extra={"source": "predictions", "predictions_file": str(predictions),
                                   "retrieval_train_data": str(train_file) if train_file else None},
                            reply_index=reply_index)
    _print_summary(metrics, out)


@eval_app.command("compare")
def compare_cmd(
    eval_a: Path = typer.Argument(..., help="Baseline eval folder."),
    eval_b: Path = typer.Argument(..., help="Candidate eval folder."),
    worst: int = typer.Option(5, "--worst", min=0, help="How many worst regressions to show."),
):
    """Side-by-side metrics, per-intent breakdown and the largest regressions from A to B."""
    compare(eval_a, eval_b, worst_k=worst)


SYSTEM_KEYS = ("n_samples", "bleu4_single_ref", "rougeL_single_ref", "bleu4_multi_ref", "rougeL_multi_ref", "sacrebleu",
               "chrf", "key_fact_accuracy", "key_fact_total", "invented_fact_rate", "invented_facts_per_reply",
               "invented_catalogue_rate", "handoff_rate", "replacement_rate", "verification_failure_rate",
               "latency_p50_ms", "latency_p95_ms", "bleu4", "rougeL", "retrieval_bleu4",
               "retrieval_rougeL", "vs_retrieval_bleu4", "vs_retrieval_rougeL", "consensus_bleu4", "consensus_rougeL",
               "vs_consensus_bleu4", "vs_consensus_rougeL")


@eval_app.command("system")
def system_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Prepared test.jsonl (dialogues; one sample per agent turn)."),
    out: Path = typer.Option(..., "--out", help="Output folder: predictions.jsonl (written as it goes; a rerun with "
                             "the same --out resumes), metrics.json, report.html."),
    run: Optional[str] = typer.Option(None, "--run", help="Training run served as `kefu serve --run` serves it "
                                      "(default: no model: light path, retrieval and handoff only)."),
    kg: Optional[str] = typer.Option(None, "--kg", help="Knowledge graph: a shop folder to import (examples/shop), "
                                     "a .db file or a database URL (default: serve.kg_url / $KEFU_HOME/kg.db)."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", min=1, help="Evaluate only the first N samples."),
    last_turn_only: bool = typer.Option(False, "--last-turn-only/--all-turns",
                                        help="Only each dialogue's last agent turn."),
    sample_time: bool = typer.Option(True, "--sample-time/--shop-clock", help="Answer each turn at its dialogue's "
                                     "date (default), or at the shop clock ($KEFU_SHOP_TIME or now)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress with ETA on stderr (a plain line "
                                  "every few samples when stderr is not a terminal)."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="Prepared train data for the retrieval "
                                              "baseline (default: the run's, else train.jsonl beside --data)."),
):
    """Evaluate the system, not only the model: held-out turns through the serving pipeline in-process."""
    parent = ctx.obj or {}
    cfg = load_config(parent.get("config_file"), {}).serve
    metrics = evaluate_system(data, out, run=run, kg=kg or parent.get("kg"), config=cfg, max_samples=max_samples,
                              last_turn_only=last_turn_only, sample_time=sample_time, progress=progress,
                              baseline_data=train_data or parent.get("train_data"))
    table = _metrics_table(f"kefu eval system → {out}", metrics, SYSTEM_KEYS)
    table.add_row("path_mix", ", ".join(f"{k} {v:.0%}" for k, v in metrics["path_mix"].items()))
    table.add_row("replacements", ", ".join(f"{k} {v}" for k, v in metrics["replacements"].items()) or "none")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.add_typer(eval_app, name="eval")
