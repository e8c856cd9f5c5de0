"""Export a trained run for serving: a merged HF folder (with a parity check), an INT8 CPU build, a vLLM adapter.

- ``merge``: base + LoRA folded into plain weights (``merge_and_unload``), saved with the tokenizer; before saving we
  compare the merged model's logits with base + adapter on probe prompts and refuse an export that drifts past
  ``atol``.
- ``int8``: the merged model's linear layers, output projection included, as weight-only INT8 (``kefu.train.quant``:
  int8 weights per output channel, bf16 activations; CPU); ``load_int8`` rebuilds it. Size, decode latency and
  agreement with the fp32 model are measured and written down.
- ``vllm_adapter``: the adapter folder plus the exact ``vllm serve`` command for multi-LoRA serving.
- ``trim_vocab``: the tokens the shop's prepared data uses (``kefu.train.vocab``), with a quality check of the run's
  model decoding over them against the full vocabulary on held-out prompts, and the decode speed-up; ``kefu serve
  --trim-vocab`` loads the result.

Each export needs ``model:deploy`` (``kefu.safety.keys.authorize``); its audit entry names the key.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from kefu.artifacts.dialogues import messages_of, read_dialogues
from kefu.artifacts.run import AdapterConfig, TrainRun
from kefu.eval.records import load_test_samples
from kefu.eval.trim import trim_quality
from kefu.safety import audit
from kefu.safety.keys import authorized
from kefu.train.models import license_note, load_model, resolve_model
from kefu.train.quant import quantize_int8_weights
from kefu.train.template import render_prompt
from kefu.train.vocab import VOCAB_FILE, corpus_vocab, trim_model, untrim_model
from kefu.types import KefuError

PROBES = [
    [{"role": "user", "content": "这件冲锋衣有黑色L码吗？"}],
    [{"role": "user", "content": "满300减50可以和优惠券一起用吗"}],
    [{"role": "user", "content": "我的快递三天没动了，怎么回事？"}, {"role": "assistant", "content": "亲，我帮您查一下物流。"},
     {"role": "user", "content": "麻烦快一点"}],
]
INT8_WEIGHTS = "int8_state_dict.pt"


def run_parts(run: str | Path) -> tuple[str, Path]:
    """A finished train run's base model name and adapter folder (read through ``TrainRun``)."""
    train_run = TrainRun(run).require_finished()
    return train_run.base_model(), train_run.adapter_dir


def _probe_batch(tokenizer) -> dict[str, torch.Tensor]:
    texts = [render_prompt(tokenizer, messages) for messages in PROBES]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return dict(batch)


@torch.no_grad()
def _logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).logits.float()


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@authorized("model:deploy")
def merge(run: str | Path, out: str | Path, *, atol: float = 1e-3) -> dict[str, Any]:
    """Merge RUN's adapter into its base, check parity, save to ``out``; returns the export report."""
    base, adapter = run_parts(run)
    out = Path(out)
    model, tokenizer = load_model(base, adapter, dtype=torch.float32)
    batch = _probe_batch(tokenizer)
    with_adapter = _logits(model, batch)
    merged = model.merge_and_unload()
    merged_logits = _logits(merged, batch)
    mask = batch["attention_mask"].bool()
    diff = (with_adapter - merged_logits).abs()[mask].max().item()
    if diff > atol:
        raise KefuError(f"merged model drifts from base + adapter by {diff:.2e} > {atol:.0e}; export refused")
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    report = {"kind": "merged", "base_model": base, "adapter": str(adapter), "parity_max_abs_diff": diff,
              "parity_atol": atol, "size_bytes": _dir_size(out), "license": license_note(base)}
    (out / "kefu_model.json").write_text(json.dumps({"license": report["license"], "base_model": base,
                                                     "adapter": str(adapter)}, ensure_ascii=False, indent=2),
                                         encoding="utf-8")
    (out / "export_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    audit.record("export.merge", str(out), details=report)
    return report


def _quantize(model):
    """Weight-only INT8 of every linear layer, the output projection too (an untied int8 copy: the input embedding
    stays floating point for exact lookups)."""
    quantize_int8_weights(model, head=True)
    return model


def load_int8(folder: str | Path):
    """Rebuild an INT8 export: the architecture from its config, quantised, then its saved INT8 weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    weights = folder / INT8_WEIGHTS
    if not weights.is_file():
        raise KefuError(f"{folder}: not an INT8 export ({INT8_WEIGHTS} missing)")
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()
    model = _quantize(model.eval())
    model.load_state_dict(torch.load(weights, weights_only=False), strict=True)
    return model, AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def _decode_ms_per_token(model, batch: dict[str, torch.Tensor], steps: int = 8) -> float:
    """Mean milliseconds per greedy decode step with the KV cache, prompt excluded."""
    from transformers import DynamicCache

    ids = batch["input_ids"][:1]
    cache = DynamicCache()  # filled in place by each call (transformers 5: the ``cache`` argument)
    token = model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) * 1000 / steps


@authorized("model:deploy")
def int8(merged_dir: str | Path, out: str | Path, *, min_agreement: float = 0.9) -> dict[str, Any]:
    """Quantise a merged export for CPU serving; measure size, decode latency and agreement with fp32.

    ``quality_ok`` is False when fewer than ``min_agreement`` of the probe positions keep fp32's greedy token, so a
    model that does not survive INT8 is flagged rather than shipped silently.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir, out = Path(merged_dir), Path(out)
    if not (merged_dir / "config.json").is_file():
        raise KefuError(f"{merged_dir}: not a model folder (run `kefu export --merge` first)")
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    fp32 = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    batch = _probe_batch(tokenizer)
    ref = _logits(fp32, batch)
    fp32_ms = _decode_ms_per_token(fp32, batch)
    quantised = _quantize(fp32)
    got = _logits(quantised, batch)
    int8_ms = _decode_ms_per_token(quantised, batch)
    mask = batch["attention_mask"].bool()
    agree = (ref.argmax(-1) == got.argmax(-1))[mask].float().mean().item()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1)[mask], ref.log_softmax(-1)[mask], log_target=True,
                                    reduction="batchmean").item()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(quantised.state_dict(), out / INT8_WEIGHTS)
    quantised.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {"kind": "int8", "method": "weight-only int8 per output channel, bf16 activations (kefu.train.quant)",
              "source": str(merged_dir), "size_bytes": _dir_size(out),
              "fp32_size_bytes": sum(f.stat().st_size for f in merged_dir.glob("*.safetensors")),
              "fp32_ms_per_token": fp32_ms, "int8_ms_per_token": int8_ms, "top1_agreement": agree,
              "kl_to_fp32": kl, "min_agreement": min_agreement, "quality_ok": agree >= min_agreement}
    (out / "export_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    audit.record("export.int8", str(out), details=report)
    return report


@authorized("model:deploy")
def trim_vocab(run: str | Path, data: str | Path, out: str | Path, *, min_agreement: float = 0.9,
               max_prompts: int = 32, max_new_tokens: int = 32) -> dict[str, Any]:
    """Build the vocabulary trim of a shop from its prepared data (train + val), check it with the run's model on
    held-out prompts (test, else val) and write ``out/vocab_trim.json`` with the measured quality.

    ``quality_ok`` is True when the trimmed model reproduces at least ``min_agreement`` of the full model's greedy
    reply tokens (token agreement up to the first difference)."""
    base, adapter = run_parts(run)
    data, out = Path(data), Path(out)
    fit = [messages_of(line.dialogue) for name in ("train.jsonl", "val.jsonl") if (data / name).is_file()
           for line in read_dialogues(data, name)]
    if not fit:
        raise KefuError(f"{data}: no train.jsonl/val.jsonl dialogues to take the vocabulary from (run `kefu prepare`)")
    held_file = data / "test.jsonl" if (data / "test.jsonl").is_file() else data / "val.jsonl"
    samples = load_test_samples(held_file, max_samples=max_prompts)
    prompts = [s["context"] for s in samples]
    refs = [s["references"][0] for s in samples]
    model, tokenizer = load_model(base, adapter, dtype=torch.float32)
    model.eval()
    trim = corpus_vocab(tokenizer, [m.get("content", "") for d in fit for m in d], chat_messages=fit,
                        sources={"dialogues": len(fit)})
    quality = trim_quality(model, tokenizer, trim, prompts, references=refs, max_new_tokens=max_new_tokens)
    batch = _probe_batch(tokenizer)
    full_ms = _decode_ms_per_token(model, batch)
    trim_model(model, trim)
    trimmed_ms = _decode_ms_per_token(model, batch)
    untrim_model(model)
    quality.update(full_ms_per_token=full_ms, trimmed_ms_per_token=trimmed_ms, min_agreement=min_agreement,
                   quality_ok=quality["token_agreement"] >= min_agreement, run=str(run), data=str(data))
    trim.quality = quality
    path = trim.save(out / VOCAB_FILE)
    report = {"kind": "trim_vocab", "path": str(path), **quality}
    (out / "export_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    audit.record("export.trim_vocab", str(path), details=report)
    return report


# The values vLLM's ``--max-lora-rank`` accepts (``vllm.config.lora.MaxLoRARanks``; newer releases add 1, which 8
# covers), ascending.
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of ``rank`` (r=12 → 16)."""
    for allowed in VLLM_MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise KefuError(f"LoRA rank {rank} is above the largest rank vLLM serves ({VLLM_MAX_LORA_RANKS[-1]}); "
                    "retrain with a smaller lora.r or export --merge")


@authorized("model:deploy")
def vllm_adapter(run: str | Path, out: str | Path, name: str = "shop") -> dict[str, Any]:
    """Copy the adapter for vLLM multi-LoRA serving and write the command that serves it.

    vLLM serves the base under ``--served-model-name`` (the run's base model name, the name ``kefu serve --engine
    remote`` asks for) and the adapter under ``name``; DoRA adapters are refused (vLLM serves plain LoRA only)."""
    base, adapter = run_parts(run)
    config = AdapterConfig.read(adapter)
    if config.dora:
        raise KefuError(f"{adapter}: a DoRA adapter (use_dora in adapter_config.json); vLLM does not serve DoRA — "
                        "export --merge and serve the merged model, or retrain with lora.dora off")
    max_rank = vllm_max_lora_rank(config.rank or 16)
    out = Path(out)
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(adapter, target)
    base_path = resolve_model(base)
    command = (f"vllm serve {base_path} --served-model-name {base} --enable-lora --max-lora-rank {max_rank} "
               f"--lora-modules {name}={target.resolve()}")
    gateway = (f"kefu serve --engine remote --remote-url http://127.0.0.1:8000 --model {base} "
               f"--adapter {name}={target.resolve()}")
    (out / "serve_vllm.sh").write_text(f"#!/usr/bin/env bash\n# Serve the base model with the shop adapter; "
                                       f"clients select it with model=\"{name}\".\n# The gateway in front of it: "
                                       f"{gateway}\n{command}\n", encoding="utf-8")
    report = {"kind": "vllm", "adapter": str(target), "base_model": base, "max_lora_rank": max_rank,
              "command": command, "gateway_command": gateway}
    audit.record("export.vllm", str(out), details=report)
    return report
