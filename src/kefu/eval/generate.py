"""Reply generation for evaluation: batched local ``model.generate`` or any OpenAI-compatible endpoint.

Local: prompts are rendered with the one shared chat template (``kefu.train.template.render_prompt``), sorted by
token length so each batch pads little, left-padded (decoder-only models continue from the right edge), generated
with the KV cache, and put back in input order. A sample's latency is its batch's wall time: that is how long that
customer would have waited in a batch of this size.

Endpoint: ``POST {endpoint}/chat/completions`` through httpx with at most ``concurrency`` requests in flight;
latency is each request's own round trip.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import httpx

from kefu.train import template
from kefu.types import KefuError


@dataclass(slots=True)
class GenResult:
    """One generated reply."""

    text: str
    latency_ms: float
    new_tokens: int


def render(tokenizer: Any, messages: list[dict]) -> str:
    """The prompt text for ``messages`` with the generation prompt appended, via the shared template."""
    return template.render_prompt(tokenizer, messages, add_generation_prompt=True)


def encode(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Prompt token ids exactly as training saw them (``kefu.train.template.encode_prompt``)."""
    return list(template.encode_prompt(tokenizer, messages))


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an agent turn: the template's end-of-turn marker(s) plus eos."""
    ids: list[int] = []
    ids.extend(template.stop_token_ids(tokenizer))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for tok in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if tok is not None and tok not in ids:
            ids.append(int(tok))
    return ids


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Any]:
    """A Rich progress bar with count, elapsed time and ETA on stderr; yields ``advance(n)``."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def decoding_settings(max_new_tokens: int, **decoding: Any) -> dict:
    """The decoding settings actually used (greedy unless ``do_sample``), for metrics.json."""
    settings = {"max_new_tokens": max_new_tokens, "do_sample": bool(decoding.get("do_sample", False))}
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "num_beams"):
        if decoding.get(key) is not None:
            settings[key] = decoding[key]
    if not settings["do_sample"]:
        settings.pop("temperature", None)
        settings.pop("top_p", None)
        settings.pop("top_k", None)
    return settings


def generate_replies(model: Any, tokenizer: Any, prompts_messages: list[list[dict]], batch_size: int = 8,
                     max_new_tokens: int = 64, *, progress: bool = False, **decoding: Any) -> list[GenResult]:
    """Generate one reply per message list, batched; results are in input order."""
    import torch

    if batch_size < 1:
        raise KefuError("batch_size must be at least 1")
    if not prompts_messages:
        return []
    encoded = [encode(tokenizer, msgs) for msgs in prompts_messages]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    eos = stop_ids(model, tokenizer) or None
    settings = decoding_settings(max_new_tokens, **decoding)
    device = next(model.parameters()).device
    results: list[GenResult | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    with progress_bar(len(encoded), "generating", progress) as advance, torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding
                seq = encoded[i]
                ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq):] = 1
            began = time.perf_counter()
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                                 pad_token_id=pad_id, eos_token_id=eos, **settings)
            latency = (time.perf_counter() - began) * 1000
            new = out[:, width:].tolist()
            stops = set(eos or []) | {pad_id}
            for row, i in enumerate(idx):
                tokens = new[row]
                n = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
                text = tokenizer.decode(tokens[:n], skip_special_tokens=True).strip()
                results[i] = GenResult(text=text, latency_ms=latency, new_tokens=n)
            advance(len(idx))
    if was_training:
        model.train()
    return [r for r in results if r is not None]


async def _endpoint_all(endpoint: str, prompts_messages: list[list[dict]], model: str, api_key: str | None,
                        concurrency: int, timeout_s: float, body_extra: dict, advance: Any,
                        transport: httpx.AsyncBaseTransport | None) -> list[GenResult]:
    sem = asyncio.Semaphore(concurrency)
    url = endpoint.rstrip("/")
    url = url if url.endswith("/chat/completions") else url + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=timeout_s, transport=transport, headers=headers) as client:
        async def one(i: int, messages: list[dict]) -> GenResult:
            async with sem:
                began = time.perf_counter()
                try:
                    resp = await client.post(url, json={"model": model, "messages": messages, **body_extra})
                except httpx.TimeoutException as exc:
                    raise KefuError(f"{url}: sample {i + 1} timed out after {timeout_s:g}s") from exc
                except httpx.HTTPError as exc:
                    raise KefuError(f"{url}: sample {i + 1}: request failed: {exc}") from exc
                latency = (time.perf_counter() - began) * 1000
            if resp.status_code != 200:
                raise KefuError(f"{url}: sample {i + 1}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                data = resp.json()
                text = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise KefuError(f"{url}: sample {i + 1}: not an OpenAI chat completion response") from exc
            usage = data.get("usage") or {}
            advance(1)
            return GenResult(text=text.strip(), latency_ms=latency, new_tokens=int(usage.get("completion_tokens") or 0))

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts_messages))))


def generate_via_endpoint(endpoint: str, prompts_messages: list[list[dict]], *, model: str = "kefu",
                          api_key: str | None = None, concurrency: int = 8, timeout_s: float = 120.0,
                          max_new_tokens: int = 64, progress: bool = False,
                          transport: httpx.AsyncBaseTransport | None = None, **decoding: Any) -> list[GenResult]:
    """One reply per message list from an OpenAI-compatible chat endpoint (vLLM, ``kefu serve``...), in order."""
    settings = decoding_settings(max_new_tokens, **decoding)
    body = {"max_tokens": settings.pop("max_new_tokens"), "stream": False}
    sampling = settings.pop("do_sample")
    body["temperature"] = settings.pop("temperature", 1.0) if sampling else 0.0
    body.update({k: v for k, v in settings.items() if k in ("top_p", "top_k", "repetition_penalty")})
    with progress_bar(len(prompts_messages), "requesting", progress) as advance:
        return asyncio.run(_endpoint_all(endpoint, prompts_messages, model, api_key, concurrency, timeout_s, body,
                                         advance, transport))
