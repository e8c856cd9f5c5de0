"""Training speed on one GPU: kefu's trainer path vs plain transformers + PEFT, Qwen2.5-0.5B and -7B shapes.

Random-initialised models with the published shapes of Qwen2.5-0.5B and Qwen2.5-7B (config only, no weights), bf16
weights under bf16 autocast, LoRA r=16 / alpha 32 on every linear layer (dropout 0, LLaMA-Factory's default),
synthetic customer-service dialogues whose lengths follow a log-normal mix (median ~260 tokens, capped at 2,048)
with the agent's turns supervised. All systems run in one process on the same card, in the same call:

- ``hf-batch1``: transformers + PEFT, one dialogue per forward, gradient accumulation, gradient checkpointing,
  ``model(input_ids, labels=...)`` (LLaMA-Factory's default example setup);
- ``hf-packed``: the same with dialogues packed into 8,192-token rows, restarting position ids (transformers
  builds the block-diagonal document mask for SDPA) and gradient checkpointing;
- ``kefu``: ``kefu.train.trainer.SupervisedLM`` over packed rows: one variable-length flash-attention call per
  layer (``kefu.train.attention``), the vocabulary projection and loss only at supervised positions in chunks
  (``kefu.train.loss``), LoRA inputs kept in bf16 (``keep_lora_input_dtype``), the LoRA update added inside one
  ``addmm`` (``kefu.train.fastlora``), no gradient checkpointing where the activations fit (it falls back to
  shorter rows, then to checkpointing, on out-of-memory). ``kefu-ckpt`` is the same with gradient checkpointing
  (the trainer's GPU default), ``kefu-peft`` with PEFT's own LoRA forward instead of ``kefu.train.fastlora``.

Figures: tokens per second (every real token of the dialogue, padding excluded) and model FLOP utilisation counted
as 4·N FLOPs per token against 790 TFLOP/s (the bf16 peak measured on these H100s), as the issue's anchors are.
Before timing, a small model checks on the GPU that the variable-length kernel gives the loss and LoRA gradients of
the per-dialogue loop and of transformers' masked attention.

    python bench/gpu_train.py --out DIR          # on the GPU machine: figures.json + section.md in DIR (~3 min)
    python bench/gpu_train.py --tiny             # CPU smoke check of the whole script (seconds)
    python bench/gpu_train.py --write-doc "TITLE=DIR/figures.json" ...   # runs' figures into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

# PyTorch's allocator setting for changing shapes: segments grow in place instead of being freed and re-reserved
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

import kefu.train.attention as attention  # noqa: E402

PEAK_FLOPS = 790e12  # bf16 dense matmul measured on this workplace's H100 (device/KINDS.md: 798 TFLOP/s)
ANCHORS = {  # the H100 figures for transformers + PEFT (tokens/s) and its targets for kefu
    "qwen2.5-7b": {"hf-batch1": 247, "hf-packed": 5500, "target": 13000},
    "qwen2.5-0.5b": {"hf-packed": 21000, "target": 60000},
}
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}
# kefu's rows per model, tried in order until one fits: (tokens per row, rows per forward, gradient checkpointing)
KEFU_LAYOUTS = {
    "qwen2.5-0.5b": [(8192, 4, False), (8192, 2, False), (8192, 1, True)],
    "qwen2.5-7b": [(8192, 1, False), (4096, 1, False), (8192, 1, True)],
    "tiny": [(512, 2, False)],
}


def qwen_config(name: str, **overrides):
    from transformers import Qwen2Config

    return Qwen2Config(**{**SHAPES[name], **overrides}, max_position_embeddings=32768, rope_theta=1e6,
                       rms_norm_eps=1e-6, use_sliding_window=False, attn_implementation="sdpa")


def dialogues(n: int, vocab: int, seed: int = 0, cap: int = 2048):
    """Synthetic customer-service dialogues: a log-normal length mix (median 260, cap ``cap``), a 32-token system
    prompt, then customer and agent turns alternating; only the agent's tokens carry labels."""
    from kefu.train.data import Example
    from kefu.train.template import IGNORE_INDEX

    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = min(cap, max(48, round(rng.lognormvariate(math.log(260), 0.75))))
        ids = [rng.randrange(10, vocab) for _ in range(length)]
        labels = [IGNORE_INDEX] * length
        at, agent = 32, False
        while at < length:
            turn = rng.randint(20, 60) if not agent else rng.randint(30, 100)
            if agent:
                labels[at:at + turn] = ids[at:at + turn]
            at += turn
            agent = not agent
        out.append(Example(ids, labels[:length], f"synthetic:{i}"))
    return out


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                            bias="none", task_type="CAUSAL_LM"))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _release(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------------------- checks
def check_kernels(device) -> dict:
    """Loss and LoRA gradients of kefu's path (variable-length kernel on a GPU) vs the per-dialogue SDPA loop and vs
    transformers' masked attention with full logits, on a small bf16 model: relative errors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kefu.train.data import collate, pack
    from kefu.train.trainer import SupervisedLM, keep_lora_input_dtype

    torch.manual_seed(0)
    config = qwen_config("tiny", hidden_size=256, num_attention_heads=8)  # head_dim 32, 4 query heads per KV head
    examples = dialogues(12, config.vocab_size, seed=7, cap=300)
    batch = {k: v.to(device) for k, v in collate(pack(examples, 1024), pad_id=0).items()}
    calls = {"varlen": 0}
    original = attention.varlen_attention

    def counted(*args, **kwargs):
        calls["varlen"] += 1
        return original(*args, **kwargs)

    results = {}
    base = AutoModelForCausalLM.from_config(config).to(device=device, dtype=torch.bfloat16)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for variant in ("masked", "loop", "varlen"):
        model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=torch.bfloat16)
        model.load_state_dict(state)
        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=8, lora_dropout=0.0, target_modules="all-linear",
                                                 init_lora_weights=False))
        keep_lora_input_dtype(model)
        wrapper = SupervisedLM(model, fast=variant != "masked")
        attention.varlen_attention = counted
        loop = attention.per_dialogue_loop() if variant == "loop" else contextlib.nullcontext()
        try:
            with loop, torch.autocast(device.type, dtype=torch.bfloat16):
                loss, count = wrapper(**batch)
            (loss / count).backward()
        finally:
            attention.varlen_attention = original
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
        results[variant] = (float(loss / count), grads)
    ref_loss, ref_grad = results["masked"]
    out = {"varlen_kernel_calls": calls["varlen"], "rows": int(batch["input_ids"].shape[0]),
           "dialogues": len(examples)}
    for variant in ("loop", "varlen"):
        loss, grad = results[variant]
        out[f"{variant}_loss_rel_err"] = abs(loss - ref_loss) / abs(ref_loss)
        out[f"{variant}_grad_rel_err"] = float((grad - ref_grad).norm() / ref_grad.norm())
    loop_grad = results["loop"][1]
    out["varlen_vs_loop_grad_rel_err"] = float((results["varlen"][1] - loop_grad).norm() / loop_grad.norm())
    out["ok"] = (all(out[k] < 2e-2 for k in out if k.endswith("rel_err"))
                 and (device.type != "cuda" or calls["varlen"] > 0))
    return out


# ------------------------------------------------------------------------------------------------------ systems
def _timed(run_unit, units, warmup: int, min_seconds: float, device) -> tuple[int, float, int]:
    """Run ``warmup`` units untimed, then units until ``min_seconds`` have passed (at least 2, at most all);
    returns (tokens, seconds, units timed)."""
    for unit in units[:warmup]:
        run_unit(unit)
    sync(device)
    start, tokens, done = time.perf_counter(), 0, 0
    for unit in units[warmup:]:
        tokens += run_unit(unit)
        done += 1
        if done >= 2 and time.perf_counter() - start >= min_seconds:
            break
    sync(device)
    return tokens, time.perf_counter() - start, done


def hf_batch1(model, examples, device, min_seconds: float, accumulation: int = 8) -> dict:
    """transformers + PEFT: one dialogue per forward, full-vocabulary loss, an optimizer step every ``accumulation``."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    groups = [examples[i:i + accumulation] for i in range(0, len(examples), accumulation)]

    def step(group):
        for example in group:
            ids = torch.tensor([example.input_ids], device=device)
            labels = torch.tensor([example.labels], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=labels).loss / len(group)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(len(e.input_ids) for e in group)

    tokens, seconds, done = _timed(step, groups, 1, min_seconds, device)
    return {"tokens": tokens, "seconds": seconds, "optimizer_steps": done, "dialogues_per_step": accumulation}


def packed_batches(examples, row_len: int, rows_per_batch: int, device):
    from kefu.train.data import collate, pack

    rows = pack(examples, row_len)
    out = []
    for i in range(0, len(rows) - rows_per_batch + 1, rows_per_batch):
        group = rows[i:i + rows_per_batch]
        batch = {k: v.to(device) for k, v in collate(group, pad_id=0, width=row_len).items()}  # fixed shapes
        batch["real_tokens"] = sum(len(e.input_ids) for row in group for e in row)
        out.append(batch)
    return out


def hf_packed(model, examples, device, min_seconds: float, row_len: int = 8192) -> dict:
    """transformers + PEFT over packed rows: the document mask comes from the restarting position ids."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = packed_batches(examples, row_len, 1, device)

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch["real_tokens"]

    tokens, seconds, done = _timed(step, batches, 1, min_seconds, device)
    return {"tokens": tokens, "seconds": seconds, "optimizer_steps": done, "row_tokens": row_len}


def kefu_packed(model, examples, device, min_seconds: float, layouts, fused: bool = True) -> dict:
    """kefu's SupervisedLM over packed rows; the first layout that fits in memory is timed. ``fused=False`` keeps
    PEFT's own LoRA forward (to show what ``kefu.train.fastlora`` adds)."""
    from kefu.train.trainer import SupervisedLM, speed_up_lora

    speed_up_lora(model, device, "bf16", fused=fused)  # what `kefu train` does on this device
    wrapper = SupervisedLM(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    failures = []
    for row_len, rows, checkpointing in layouts:
        if checkpointing:
            model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.get_base_model().gradient_checkpointing_disable()
        batches = packed_batches(examples, row_len, rows, device)

        def step(batch):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss_sum, count = wrapper(batch["input_ids"], batch["labels"], batch["position_ids"])
            (loss_sum / count).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return batch["real_tokens"]

        out_of_memory = False
        try:
            tokens, seconds, done = _timed(step, batches, 1, min_seconds, device)
        except torch.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:  # outside the except block, so the failed step's tensors are already freed
            failures.append(f"{rows}x{row_len}{' +ckpt' if checkpointing else ''}: out of memory")
            optimizer.zero_grad(set_to_none=True)
            del batches
            _release(device)
            continue
        return {"tokens": tokens, "seconds": seconds, "optimizer_steps": done, "row_tokens": row_len,
                "fused_lora": fused, "rows_per_forward": rows, "gradient_checkpointing": checkpointing,
                "fell_back": failures,
                "attention": getattr(model.config, "_attn_implementation", "?"),
                "varlen_kernel": attention._varlen_kernel() is not None and device.type == "cuda"}
    return {"error": "; ".join(failures)}


def bench_model(name: str, device, min_seconds: float, n_dialogues: int, systems: list[str]) -> dict:
    from transformers import AutoModelForCausalLM

    config = qwen_config(name)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in base.parameters())
    model = lora(base)
    model.train()
    init_seconds = time.perf_counter() - started
    examples = dialogues(n_dialogues, config.vocab_size, seed=1)
    supervised = sum(e.supervised for e in examples) / sum(len(e.input_ids) for e in examples)
    result = {"params": params, "init_seconds": round(init_seconds, 1), "supervised_fraction": round(supervised, 3),
              "median_dialogue_tokens": sorted(len(e.input_ids) for e in examples)[len(examples) // 2],
              "systems": {}}
    for system in systems:
        _release(device)
        if system in ("hf-batch1", "hf-packed"):
            model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            figures = (hf_batch1(model, examples, device, min_seconds) if system == "hf-batch1"
                       else hf_packed(model, examples, device, min_seconds, row_len=KEFU_LAYOUTS[name][0][0]))
        elif system in ("kefu", "kefu-peft"):
            figures = kefu_packed(model, examples, device, min_seconds, KEFU_LAYOUTS[name], fused=system == "kefu")
        else:  # kefu-ckpt: the trainer's GPU default, gradient checkpointing on, rows as kefu's first layout
            row_len, rows, _ = KEFU_LAYOUTS[name][0]
            figures = kefu_packed(model, examples, device, min_seconds, [(row_len, rows, True)])
        if "seconds" in figures:
            tps = figures["tokens"] / figures["seconds"]
            figures["tokens_per_s"] = round(tps, 1)
            figures["mfu"] = round(4 * params * tps / PEAK_FLOPS, 4)
        if device.type == "cuda":
            figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
        result["systems"][system] = figures
        print(f"{name:14s} {system:10s} {json.dumps(figures)}", flush=True)
    del model, base
    _release(device)
    return result


def environment(device) -> dict:
    from importlib import metadata

    env = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = "?"
    env["torch"] = torch.__version__
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = f"{props.name}, {props.total_memory / 2 ** 30:.0f} GiB, {props.multi_processor_count} SMs"
        env["cuda"] = torch.version.cuda
    else:
        env["gpu"] = "none (CPU smoke run)"
    return env


# ------------------------------------------------------------------------------------------------------ report
def _table(figures: dict) -> list[str]:
    env = figures["environment"]
    check = figures["check"]
    lines = [
        f"Card: {env['gpu']}; torch {env['torch']} (CUDA {env.get('cuda')}), transformers {env['transformers']}, "
        f"peft {env['peft']}; run {figures['date']}.",
        "",
        "| model | system | tokens/s | MFU | layout | peak GiB | vs hf-packed | issue anchor / target |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for name, result in figures["models"].items():
        systems = result["systems"]
        packed = systems.get("hf-packed", {}).get("tokens_per_s")
        for system, row in systems.items():
            if "tokens_per_s" not in row:
                lines.append(f"| {name} | {system} | failed: {row.get('error')} | | | | | |")
                continue
            if system == "hf-batch1":
                layout = f"1 dialogue, accumulation {row['dialogues_per_step']}, ckpt"
            elif system == "hf-packed":
                layout = f"1x{row['row_tokens']} rows, masked SDPA, ckpt"
            else:
                layout = (f"{row['rows_per_forward']}x{row['row_tokens']} rows, "
                          f"{'fused LoRA, ' if row.get('fused_lora') else 'PEFT LoRA, '}"
                          f"{'varlen flash' if row.get('varlen_kernel') else 'per-dialogue SDPA'}"
                          f"{', ckpt' if row['gradient_checkpointing'] else ', no ckpt'}")
            anchor = ANCHORS.get(name, {})
            note = f"anchor {anchor[system]:,}" if system in anchor else ""
            if system == "kefu" and "target" in anchor:
                met = row["tokens_per_s"] >= anchor["target"]
                note = f"target ≥ {anchor['target']:,} {'✅' if met else '❌'}"
            ratio = f"{row['tokens_per_s'] / packed:.2f}×" if packed else ""
            lines.append(f"| {name} | {system} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | {layout} | "
                         f"{row.get('peak_memory_gib', '')} | {ratio} | {note} |")
    lines += [
        "",
        f"Kernel check before timing (small bf16 model, {check.get('dialogues')} dialogues in {check.get('rows')} "
        f"rows, {check.get('varlen_kernel_calls')} variable-length kernel calls): loss relative error vs "
        f"transformers' masked attention {check.get('varlen_loss_rel_err', float('nan')):.1e}, LoRA gradient "
        f"{check.get('varlen_grad_rel_err', float('nan')):.1e} (per-dialogue loop: "
        f"{check.get('loop_grad_rel_err', float('nan')):.1e}); {'passed' if check.get('ok') else 'FAILED'}.",
    ]
    return lines


def section(runs: list[tuple[str, dict]]) -> str:
    """docs/benchmarks.md section: one table per run, each run's rows from one call on one card."""
    lines = [
        "## Training on one GPU (`bench/gpu_train.py`)",
        "",
        "Random-initialised Qwen2.5 shapes, bf16, LoRA r16 on all linear layers (dropout 0), a log-normal "
        "dialogue-length mix (median ~260 tokens, cap 2,048), agent turns supervised. Tokens/s counts every real "
        "token; MFU = 4·N·tokens/s / 790 TFLOP/s (N = all parameters). Ratios only within a table: every table is "
        "one call on one card.",
    ]
    for title, figures in runs:
        lines += ["", f"### {title}", ""] + _table(figures)
    lines += [
        "",
        "Command: `python bench/gpu_train.py --out DIR` on the lent GPU machine (a run's raw figures: "
        "docs/gpu_train/), then `bench/gpu_train.py --write-doc TITLE=DIR/figures.json ...` here.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="qwen2.5-0.5b,qwen2.5-7b")
    parser.add_argument("--systems", default="hf-batch1,hf-packed,kefu-peft,kefu,kefu-ckpt")
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per system (at least 2 units)")
    parser.add_argument("--dialogues", type=int, default=1200)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny model")
    parser.add_argument("--out", type=Path, help="write figures.json and section.md here")
    parser.add_argument("--write-doc", nargs="+", metavar="TITLE=FIGURES.json",
                        help="write these runs' figures into docs/benchmarks.md and exit")
    args = parser.parse_args()
    if args.write_doc:
        from _report import write_section

        runs = [(title, json.loads(Path(path).read_text(encoding="utf-8")))
                for title, path in (item.split("=", 1) for item in args.write_doc)]
        write_section("gpu_train", section(runs))
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = ["tiny"] if args.tiny else args.models.split(",")
    figures = {"date": time.strftime("%Y-%m-%d"), "environment": environment(device)}
    print(json.dumps(figures["environment"]), flush=True)
    figures["check"] = check_kernels(device)
    print("check", json.dumps(figures["check"]), flush=True)
    figures["models"] = {}
    for name in models:
        figures["models"][name] = bench_model(name, device, 1.0 if args.tiny else args.seconds,
                                              120 if args.tiny else args.dialogues, args.systems.split(","))
        if args.out:  # after every model, so a later failure keeps the earlier figures
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    text = section([(figures["environment"]["gpu"], figures)])
    if args.out:
        (args.out / "section.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if figures["check"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
