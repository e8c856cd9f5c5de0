"""CLI commands of the train stage; `register` adds them to the root `kefu` app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kefu.config import load_config
from kefu.progress import duration
from kefu.types import KefuError


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""

    @app.command("train")
    def train_command(
        data: Path = typer.Option(..., "--data", "-d", help="The prepare stage's folder (train.jsonl, optional "
                                  "val.jsonl) or a train.jsonl file."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder: adapter/, config.yaml, metrics.jsonl, "
                                 "train_report.json, checkpoints/."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="gemma3-270m (default), smollm2-135m or a "
                                            "local Hugging Face folder."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
        epochs: Optional[float] = typer.Option(None, "--epochs"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Dialogues per optimizer step."),
        micro_batch_rows: Optional[int] = typer.Option(None, "--micro-batch-rows", help="Packed rows per forward."),
        max_len: Optional[int] = typer.Option(None, "--max-len", help="Tokens per packed row."),
        learning_rate: Optional[float] = typer.Option(None, "--lr"),
        init_adapter: Optional[Path] = typer.Option(None, "--init-adapter", help="Continue from this LoRA adapter."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
        last_turn_only: bool = typer.Option(False, "--last-turn-only", help="Loss on the last agent turn only."),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt"),
        kg: Optional[str] = typer.Option(None, "--kg", help="Train as you serve: render each agent turn with the "
                                         "facts this knowledge graph gives for it (SQLAlchemy URL, .db file, or a "
                                         "shop folder such as examples/shop, imported into a temporary SQLite "
                                         "graph); the replies' facts become slots."),
        shop_name: Optional[str] = typer.Option(None, "--shop-name", help="The shop's name in the system prompt of "
                                                "grounded examples (default 本店, as kefu serve)."),
        exemplars: Optional[int] = typer.Option(None, "--exemplars", min=0, max=8, help="With --kg: the shop's past "
                                                "replies to the most alike questions shown in each turn's prompt "
                                                "(default 2; kefu serve shows as many; 0: none)."),
        precision: Optional[str] = typer.Option(None, "--precision", help="auto|fp32|bf16|fp16"),
        use_dora: Optional[bool] = typer.Option(None, "--dora/--no-dora"),
        use_rslora: Optional[bool] = typer.Option(None, "--rslora/--no-rslora"),
        compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model body."),
        fsdp: Optional[bool] = typer.Option(None, "--fsdp/--no-fsdp", help="Under torchrun/accelerate launch: "
                                            "shard the base model, gradients and optimizer state over the processes "
                                            "(FSDP2, ZeRO-3-like) instead of DDP; no mid-run checkpoints."),
        gradient_checkpointing: Optional[bool] = typer.Option(
            None, "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute activations in backward (default: on for GPU, off for CPU). Off is ~1.45x faster on "
                 "a GPU where the activations fit (docs/benchmarks.md)."),
        lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default 0.1)."),
        lora_experts: Optional[bool] = typer.Option(
            None, "--lora-experts/--no-lora-experts", help="Mixture-of-experts bases (DeepSeek V3): LoRA on the "
            "routed experts too (needs --lora-dropout 0; serve the merged export)."),
        logit_grad_floor: Optional[float] = typer.Option(
            None, "--logit-grad-floor", help="CPU: leave vocabulary columns with probabilities below this out of "
                                             "the loss's backward product (default 2^-16; 0: exact gradients)."),
        save_steps: Optional[int] = typer.Option(None, "--save-steps", help="Checkpoint every N steps (0: never)."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress (a bar on a terminal, else a "
                                         "plain line every ~30 s)."),
        warn_after_hours: Optional[float] = typer.Option(
            None, "--warn-after-hours", min=0.0,
            help="Warn, with shorter settings, when the run is expected to take longer than this (default: 1 on "
                 "CPU, 8 on a GPU). The estimate is printed before the first step either way; nothing is blocked."),
        dp: bool = typer.Option(False, "--dp", help="Differentially private training (DP-SGD, Opacus)."),
        epsilon: Optional[float] = typer.Option(None, "--epsilon", help="DP budget ε (default safety.dp.epsilon)."),
        delta: Optional[float] = typer.Option(None, "--delta", help="DP δ (default safety.dp.delta)."),
        consent_override: Optional[str] = typer.Option(None, "--consent-override",
                                                       help="Train on data without a consent record; the reason "
                                                            "is audited."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (default ./kefu.yaml)."),
    ):
        """Fine-tune a LoRA adapter on prepared dialogues (the same command runs DDP under torchrun)."""
        import json

        from rich.console import Console

        from kefu.train.trainer import train  # deferred: heavy (torch)

        overrides = {
            "train.model": model, "train.max_steps": max_steps, "train.epochs": epochs,
            "train.batch_size": batch_size, "train.micro_batch_rows": micro_batch_rows, "train.max_len": max_len,
            "train.learning_rate": learning_rate, "train.init_adapter": str(init_adapter) if init_adapter else None,
            "train.train_on": "last_assistant" if last_turn_only else None, "train.system_prompt": system_prompt,
            "train.precision": precision, "train.use_dora": use_dora, "train.use_rslora": use_rslora,
            "train.compile": compile, "train.fsdp": fsdp, "train.save_steps": save_steps, "train.seed": seed,
            "train.gradient_checkpointing": gradient_checkpointing, "train.lora_dropout": lora_dropout,
            "train.lora_experts": lora_experts,
            "train.logit_grad_floor": logit_grad_floor, "train.kg_url": kg, "train.shop_name": shop_name,
            "train.exemplars": exemplars,
        }
        full = load_config(config, overrides)
        settings = full.train
        if dp:
            from kefu.train.dp import train_dp  # deferred: heavy (torch)

            if resume:
                raise KefuError("--dp runs cannot --resume (the privacy accountant would restart)")
            report = train_dp(settings, data, out, epsilon=epsilon or full.safety.dp.epsilon,
                              delta=delta or full.safety.dp.delta, max_grad_norm=full.safety.dp.max_grad_norm,
                              progress=not no_progress, consent_override=consent_override)
            Console().print_json(json.dumps(report, ensure_ascii=False))
            return
        report = train(settings, data, out, resume=resume, progress=not no_progress,
                       warn_after_s=warn_after_hours * 3600 if warn_after_hours is not None else None,
                       consent_override=consent_override)
        summary = {k: report[k] for k in ("steps", "final_loss", "val_loss", "supervised_tokens",
                                          "supervised_tokens_per_s", "train_seconds", "split", "truncated",
                                          "skipped_no_agent", "adapter")}
        Console().print_json(json.dumps(summary, ensure_ascii=False))
        timing = report.get("time_estimate") or {}
        if timing.get("before"):
            measured = timing.get("measured") or {}
            Console(stderr=True).print(
                f"[dim]time: estimated {duration(timing['before']['seconds'])} before the first step"
                + (f", {duration(measured['seconds'])} once measured" if measured else "")
                + f"; took {duration(timing['actual_train_seconds'])} (train_report.json: time_estimate)[/]")
        if report.get("license"):
            Console(stderr=True).print(f"[dim]base model: {report['license']}[/]")
