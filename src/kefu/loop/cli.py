"""CLI of the improvement loop: ``kefu feedback``, ``kefu retrain``, ``kefu models``, ``kefu export``, ``kefu loop``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kefu.config import load_config
from kefu.loop.analyze import analyze, write_report
from kefu.loop.dataset import build_dataset
from kefu.loop.feedback import FeedbackStore
from kefu.loop.monthly import run_round
from kefu.loop.registry import Registry
from kefu.loop.retrain import retrain
from kefu.safety import audit
from kefu.safety.keys import acting_as, authorize
from kefu.types import KefuError

console = Console()
feedback_app = typer.Typer(no_args_is_help=True, help="Read and analyse customer feedback.")
models_app = typer.Typer(no_args_is_help=True, help="The adapter registry: list, promote, roll back.")
loop_app = typer.Typer(no_args_is_help=True, help="The unattended monthly improvement loop.")


def _since(days: Optional[int]) -> Optional[datetime]:
    return datetime.now(timezone.utc) - timedelta(days=days) if days else None


def _config(path: Optional[Path], overrides: dict | None = None):
    return load_config(path, overrides)


@feedback_app.command("analyze")
def feedback_analyze(out: Path = typer.Option(Path("feedback_report"), "--out", "-o"),
                     days: Optional[int] = typer.Option(None, "--days", help="only the last N days"),
                     db: Optional[str] = typer.Option(None, "--db", help="feedback store URL"),
                     config: Optional[Path] = typer.Option(None, "--config", "-c")):
    """Group failures by intent, entity and type; top reasons with examples; trend; HTML report."""
    with acting_as(authorize("feedback:read")):  # reads feedback, changes nothing: checked and audited here
        cfg = _config(config).loop
        records = FeedbackStore.open(db).list(_since(days))
        result = analyze(records, min_rating_ok=cfg.min_rating_ok)
        page = write_report(result, out)
        audit.record("feedback.read", str(db or "feedback.db"),
                     details={"records": result["records"], "report": str(page)})
    table = Table("failure type", "count", title=f"{result['records']} feedback records")
    for key, value in result["by_failure_type"].items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"report: {page}")


@feedback_app.command("dataset")
def feedback_dataset(out: Path = typer.Option(..., "--out", "-o", help="folder for the tier-2 train.jsonl"),
                     previous: list[Path] = typer.Option([], "--previous", help="earlier train.jsonl files to dedup against"),
                     days: Optional[int] = typer.Option(None, "--days"),
                     db: Optional[str] = typer.Option(None, "--db")):
    """Turn corrections and resolved handoffs into a deduplicated tier-2 training set."""
    authorize("feedback:read")  # before the store is read; build_dataset checks again and audits
    counts = build_dataset(FeedbackStore.open(db).list(_since(days)), out, previous=previous)
    console.print_json(json.dumps(counts))


@models_app.command("list")
def models_list():
    """Every registered adapter version, its status and gate metrics."""
    registry = Registry()
    current = registry.current()
    table = Table("version", "status", "base model", "created", "metrics", "note")
    for entry in registry.versions():
        marker = " ←serving" if current and entry["version"] == current["version"] else ""
        table.add_row(entry["version"] + marker, entry["status"], entry["base_model"], entry["created_at"][:19],
                      json.dumps(entry["metrics"], ensure_ascii=False)[:80], entry.get("status_reason", entry["note"]))
    console.print(table)


@models_app.command("register")
def models_register(adapter: Path, base: str = typer.Option(..., "--base", help="base model name or folder"),
                    note: str = typer.Option("", "--note")):
    """Add an adapter folder to the registry as a candidate."""
    console.print(Registry().register(adapter, base_model=base, note=note)["version"])


@models_app.command("promote")
def models_promote(version: str, reason: str = typer.Option("", "--reason")):
    """Serve ``version`` from now on (a running server picks it up without downtime)."""
    console.print(f"serving {Registry().promote(version, reason)['version']}")


@models_app.command("rollback")
def models_rollback():
    """Go back to the previously served version."""
    console.print(f"serving {Registry().rollback()['version']}")


def retrain_command(new: Path = typer.Option(..., "--new", help="new prepared data (folder or train.jsonl)"),
                    old: Path = typer.Option(..., "--old", help="previous prepared data (folder with train/test)"),
                    out: Path = typer.Option(..., "--out", "-o"),
                    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
                    consent_override: Optional[str] = typer.Option(
                        None, "--consent-override", help="Train on data without a consent record; the reason is "
                                                         "audited."),
                    config: Optional[Path] = typer.Option(None, "--config", "-c")):
    """Fine-tune from the serving adapter on new + replayed data; promote only if the gate passes."""
    cfg = _config(config, {"train.max_steps": max_steps})
    result = retrain(new, old, out, train_config=cfg.train, loop_config=cfg.loop, consent_override=consent_override)
    console.print_json(json.dumps(result, ensure_ascii=False))
    if not result["promoted"]:
        raise typer.Exit(3)


def export_command(run: Path = typer.Option(..., "--run", help="a train run folder"),
                   out: Path = typer.Option(..., "--out", "-o"),
                   merge: bool = typer.Option(False, "--merge", help="merged HF folder (parity-checked)"),
                   int8: bool = typer.Option(False, "--int8", help="INT8 CPU build (implies --merge)"),
                   vllm: Optional[str] = typer.Option(None, "--vllm", help="adapter for vLLM multi-LoRA, by name"),
                   trim_vocab: Optional[Path] = typer.Option(None, "--trim-vocab", help="prepared data folder: keep "
                                                             "only the tokens it uses (quality-checked); for "
                                                             "`kefu serve --trim-vocab OUT/vocab`"),
                   config: Optional[Path] = typer.Option(None, "--config", "-c")):
    """Export a run: merged model, INT8 CPU model, or a vLLM adapter with its serve command."""
    import kefu.loop.export as export  # deferred: heavy (torch)

    authorize("model:deploy")  # fail before loading anything; each export function checks again and audits
    if not (merge or int8 or vllm or trim_vocab):
        raise KefuError("choose at least one of --merge, --int8, --vllm NAME, --trim-vocab DATA")
    cfg = _config(config).loop
    if merge or int8:
        report = export.merge(run, out / "merged", atol=cfg.parity_atol)
        console.print(f"merged → {out / 'merged'} (parity max |Δlogit| {report['parity_max_abs_diff']:.2e})")
        if int8:
            report = export.int8(out / "merged", out / "int8")
            console.print(f"int8 → {out / 'int8'}: {report['size_bytes'] / 1e6:.1f} MB, "
                          f"{report['int8_ms_per_token']:.1f} ms/token (fp32 {report['fp32_ms_per_token']:.1f}), "
                          f"top-1 agreement {report['top1_agreement']:.1%}")
            if not report["quality_ok"]:
                console.print(f"[bold red]warning:[/] INT8 keeps only {report['top1_agreement']:.1%} of fp32's greedy "
                              f"tokens (< {report['min_agreement']:.0%}); serve the merged fp32/bf16 model instead")
    if vllm:
        report = export.vllm_adapter(run, out / "vllm", vllm)
        console.print(report["command"])
    if trim_vocab:
        report = export.trim_vocab(run, trim_vocab, out / "vocab")
        console.print(f"vocabulary trim → {report['path']}: {report['kept_tokens']:,} of {report['vocab_size']:,} "
                      f"tokens, {report['trimmed_ms_per_token']:.1f} ms/token (full {report['full_ms_per_token']:.1f}),"
                      f" greedy token agreement {report['token_agreement']:.1%}, exact replies "
                      f"{report['exact_match']:.1%}, reference coverage {report['reference_coverage'] or 0:.1%}")
        if not report["quality_ok"]:
            console.print(f"[bold red]warning:[/] the trim keeps only {report['token_agreement']:.1%} of the full "
                          f"model's greedy tokens (< {report['min_agreement']:.0%}); prepare more data or skip it")


@loop_app.command("monthly")
def loop_monthly(old: Path = typer.Option(..., "--old", help="the prepared data the serving model was trained on"),
                 work: Path = typer.Option(..., "--work", help="folder for this round's files"),
                 days: int = typer.Option(31, "--days"),
                 max_steps: Optional[int] = typer.Option(None, "--max-steps"),
                 consent_override: Optional[str] = typer.Option(
                     None, "--consent-override", help="Reason (audited) to train on this round's feedback-derived "
                                                      "data, which has no consent record of its own."),
                 config: Optional[Path] = typer.Option(None, "--config", "-c")):
    """One unattended round: feedback → analyze → dataset → retrain → gate → promote."""
    cfg = _config(config, {"train.max_steps": max_steps})
    result = run_round(old, work, days=days, config=cfg, consent_override=consent_override)
    console.print_json(json.dumps(result, ensure_ascii=False, default=str))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.add_typer(feedback_app, name="feedback")
    app.add_typer(models_app, name="models")
    app.add_typer(loop_app, name="loop")
    app.command("retrain")(retrain_command)
    app.command("export")(export_command)
