"""Differentially private LoRA training (``kefu train --dp``): DP-SGD through Opacus, one dialogue per row.

The guarantee is per dialogue, so there is no packing: each row holds one (padded) dialogue, rows are drawn by
Poisson sampling, every row's gradient is clipped to ``max_grad_norm`` and Gaussian noise calibrated to the
(ε, δ) budget over the planned epochs is added. Single process, no fp16 loss scaling (Opacus clips per sample).
The ε actually spent is reported and audited.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from kefu.artifacts.run import TrainRun
from kefu.safety import audit
from kefu.safety.consent import require_consent
from kefu.safety.keys import authorized
from kefu.train.config import TrainConfig
from kefu.train.data import check_data, collate, find_data, load_examples
from kefu.train.models import load_model, resolve_model
from kefu.types import KefuError


class _Rows(torch.utils.data.Dataset):
    """Each dialogue padded to the longest one: the fixed shape Opacus's per-sample hooks want."""

    def __init__(self, examples, pad_id: int):
        self.batch = collate([[e] for e in examples], pad_id)

    def __len__(self) -> int:
        return self.batch["input_ids"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


@authorized("model:train")
def train_dp(config: TrainConfig, data: str | Path, out: str | Path, *, epsilon: float, delta: float,
             max_grad_norm: float = 1.0, progress: bool = True, consent_override: str | None = None
             ) -> dict[str, Any]:
    """Train a LoRA adapter on ``data`` with DP-SGD spending at most (``epsilon``, ``delta``); returns the report.

    Needs ``model:train`` and a consent/provenance record for the data (or an audited ``consent_override``
    reason), as ``kefu.train.trainer.train``."""
    require_consent([find_data(data)[0]], override_reason=consent_override)
    from peft import get_peft_model
    from rich.progress import Progress

    from kefu.safety import dp  # deferred: heavy (opacus)
    from kefu.train.trainer import SupervisedLM, _write_adapter, lora_config

    run = TrainRun(out)
    if run.adapter_dir.exists():
        raise KefuError(f"{run.path}: already holds a finished run (adapter/); choose another --out")
    if config.init_adapter:
        raise KefuError("--dp trains a fresh adapter: an --init-adapter's earlier training is not covered by the "
                        "privacy budget")
    check_data(data)
    model_path = resolve_model(config.model)
    model, tokenizer = load_model(str(model_path), dtype=torch.float32, trainable=True)
    examples, _, stats = load_examples(data, tokenizer, config)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, lora_config(config, model))
    model.train()
    wrapper = SupervisedLM(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    rows = _Rows(examples, tokenizer.pad_token_id)
    epochs = max(1, math.ceil(config.epochs))
    loader = torch.utils.data.DataLoader(rows, batch_size=min(config.batch_size, len(rows)), shuffle=False)
    private, optimizer, loader, engine = dp.make_private(
        wrapper, optimizer, loader, epsilon=epsilon, delta=delta, epochs=epochs, max_grad_norm=max_grad_norm,
        loss_reduction="sum", seed=config.seed)
    started, step, losses, supervised = time.time(), 0, [], 0
    run.write_record({"train": config.model_dump(mode="json"),
                      "dp": {"epsilon": epsilon, "delta": delta, "max_grad_norm": max_grad_norm},
                      "data": {"path": str(Path(data).resolve()), "sha256": stats.sha256, "files": stats.files},
                      "model_path": str(model_path)})
    run.start_metrics()
    total = epochs * len(loader)
    if config.max_steps:
        total = min(total, config.max_steps)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("DP-SGD", total=total)
        for _ in range(epochs):
            for batch in loader:
                if step >= total:
                    break
                if batch["input_ids"].shape[0] == 0:  # Poisson sampling can draw an empty batch
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss_sum, count = private(batch["input_ids"], batch["labels"], batch["position_ids"])
                loss_sum.backward()
                optimizer.step()
                step += 1
                n = max(int(count), 1)
                supervised += n
                losses.append(loss_sum.item() / n)
                spent = dp.epsilon_spent(engine, delta)
                run.append_metrics({"step": step, "loss": losses[-1], "epsilon_spent": spent})
                bar.update(task, advance=1, description=f"DP-SGD loss {losses[-1]:.3f} ε {spent:.2f}")
    if not losses:
        raise KefuError(f"{data}: DP training drew no non-empty batch; add data or raise batch_size")
    _write_adapter(dp.unwrap(private).model, tokenizer, config, run.adapter_dir, model_path)
    report = {"dp": True, "epsilon": epsilon, "delta": delta, "epsilon_spent": dp.epsilon_spent(engine, delta),
              "noise_multiplier": dp.noise_multiplier(optimizer), "max_grad_norm": max_grad_norm, "steps": step,
              "final_loss": losses[-1], "supervised_tokens": supervised, "train_seconds": time.time() - started,
              "tokens_per_s": supervised / max(time.time() - started, 1e-9), "model": config.model,
              "data_sha256": stats.sha256}
    run.write_report(report)
    audit.record("train", str(run.path), digest=stats.sha256, details=report)
    return report
