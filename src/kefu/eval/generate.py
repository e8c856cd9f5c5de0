"""Reply generation for evaluation: batched local ``model.generate`` or any OpenAI-compatible endpoint.

Local: prompts are rendered with the one shared chat template (``kefu.train.template.render_prompt``) and capped at
``max_prompt_tokens`` (:func:`fit_prompt`: the oldest messages after the system prompt are dropped, as training split
long dialogues at ``train.max_len``), sorted by token length so each batch pads little, grouped into batches of at
most ``batch_size`` rows and ``max_batch_tokens`` padded tokens (prompt + new tokens: what the KV cache and the
attention scores grow with; :func:`token_batches`), left-padded (decoder-only models continue from the right edge),
generated with the KV cache, and handed back batch by batch (:func:`iter_replies`) so a caller can write them to
disk as they are made; :func:`generate_replies` collects them in input order. A sample's latency is its batch's wall
time: that is how long that customer would have waited in a batch of this size.

Memory stays bounded by the batch, never by the data: nothing of a finished batch is kept but its texts. The
fluency score (:func:`reply_perplexity`) asks the model for logits at the reply's positions only (``logits_to_keep``
on right-aligned rows): full logits over a prompt are rows × tokens × vocabulary floats (8 × 2,000 × 262,144 × 4
bytes = 17 GB for Gemma 3's vocabulary, twice over with the log-softmax), which is what filled 24 GB on long JDDC
dialogues right after generating.

Endpoint: ``POST {endpoint}/chat/completions`` through httpx with at most ``concurrency`` requests in flight;
latency is each request's own round trip; ``on_result(i, result)`` is called as each answer arrives.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import httpx

from kefu.eval.predictions import Progress
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
    """Progress with count, elapsed time and ETA on stderr (``kefu.eval.predictions.Progress``: Rich's bar on a
    terminal, a plain line every few samples when stderr is a file or a pipe); yields ``advance(n)``."""
    with Progress(total, description, enabled=enabled) as bar:
        yield bar.advance


def fit_prompt(tokenizer: Any, messages: list[dict], max_tokens: int | None) -> tuple[list[int], list[dict]]:
    """(prompt ids, the messages they render) with at most ``max_tokens`` ids: the oldest messages after a leading
    system message are dropped (the kept part starts at a customer turn when it can); a single message longer than
    the budget is cut from the left. ``None``: no cap."""
    ids = encode(tokenizer, messages)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids, messages
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head):]
    lo, hi = 0, len(body) - 1  # the smallest start index whose prompt fits (length falls as start grows)
    fitted: tuple[list[int], list[dict]] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        start = mid
        while start < len(body) - 1 and body[start]["role"] != "user":
            start += 1
        kept = head + body[start:]
        kept_ids = encode(tokenizer, kept)
        if len(kept_ids) <= max_tokens:
            fitted, hi = (kept_ids, kept), mid - 1
        else:
            lo = mid + 1
    if fitted is not None:
        return fitted
    kept = head + body[-1:]
    return encode(tokenizer, kept)[-max_tokens:], kept


def token_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None,
                  max_new_tokens: int = 0) -> list[list[int]]:
    """Indices of ``lengths`` (prompt lengths) grouped into generation batches, longest first: at most
    ``batch_size`` rows and, with ``max_batch_tokens``, at most that many padded tokens per batch (rows × (the
    longest prompt + ``max_new_tokens``)); a prompt longer than the budget goes alone."""
    if batch_size < 1:
        raise KefuError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]] + max_new_tokens  # sorted: the first is the longest
            if len(batch) < batch_size and (max_batch_tokens is None or (len(batch) + 1) * width <= max_batch_tokens):
                batch.append(i)
                continue
        batches.append([i])
    return batches


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


def _pad_id(tokenizer: Any) -> int:
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return int(pad_id)


def iter_replies(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], batch_size: int = 8,
                 max_new_tokens: int = 64, *, max_batch_tokens: int | None = None, **decoding: Any
                 ) -> Iterator[list[tuple[int, GenResult]]]:
    """Generate one reply per prompt (token ids, see :func:`fit_prompt`), longest prompts first, in batches of
    :func:`token_batches`; yields each batch's ``(index into prompt_ids, result)`` pairs as soon as it is made."""
    import torch

    batches = token_batches([len(p) for p in prompt_ids], batch_size, max_batch_tokens, max_new_tokens)
    pad_id = _pad_id(tokenizer)
    eos = stop_ids(model, tokenizer) or None
    stops = set(eos or []) | {pad_id}
    settings = decoding_settings(max_new_tokens, **decoding)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for idx in batches:
            width = max(len(prompt_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding
                seq = prompt_ids[i]
                ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
                mask[row, width - len(seq):] = 1
            began = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                                     pad_token_id=pad_id, eos_token_id=eos, **settings)
            latency = (time.perf_counter() - began) * 1000
            new = out[:, width:].tolist()
            del out, ids, mask  # only the new token ids outlive the batch
            made = []
            for row, i in enumerate(idx):
                tokens = new[row]
                n = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
                text = tokenizer.decode(tokens[:n], skip_special_tokens=True).strip()
                made.append((i, GenResult(text=text, latency_ms=latency, new_tokens=n)))
            yield made
    finally:
        if was_training:
            model.train()


def generate_replies(model: Any, tokenizer: Any, prompts_messages: list[list[dict]], batch_size: int = 8,
                     max_new_tokens: int = 64, *, progress: bool = False, max_prompt_tokens: int | None = None,
                     max_batch_tokens: int | None = None, **decoding: Any) -> list[GenResult]:
    """Generate one reply per message list, batched (see :func:`iter_replies`); results are in input order."""
    if batch_size < 1:
        raise KefuError("batch_size must be at least 1")
    if not prompts_messages:
        return []
    encoded = [fit_prompt(tokenizer, msgs, max_prompt_tokens)[0] for msgs in prompts_messages]
    results: list[GenResult | None] = [None] * len(encoded)
    with progress_bar(len(encoded), "generating", progress) as advance:
        for made in iter_replies(model, tokenizer, encoded, batch_size, max_new_tokens,
                                 max_batch_tokens=max_batch_tokens, **decoding):
            for i, result in made:
                results[i] = result
            advance(len(made))
    return [r for r in results if r is not None]


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False


def reply_perplexity(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], replies: Sequence[str],
                     max_batch_tokens: int = 8192) -> list[tuple[float | None, float, int]]:
    """Per reply, ``(perplexity, summed negative log-likelihood, tokens)`` of its tokens given its prompt (the same
    quantity as ``kefu.eval.experience.perplexity``: the base model when a PEFT adapter is loaded, only reply tokens
    scored), with memory bounded by the batch: rows are right-aligned (left padding, explicit position ids) and the
    model returns logits for the last ``longest reply + 1`` positions only, never for the whole prompt. Empty
    replies get ``(None, 0.0, 0)``."""
    import contextlib

    import torch

    disable = getattr(model, "disable_adapter", None)
    ctx = disable() if callable(disable) and hasattr(model, "peft_config") else contextlib.nullcontext()
    items = []
    for i, (p_ids, reply) in enumerate(zip(prompt_ids, replies)):
        r_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] if reply.strip() else []
        if r_ids:
            items.append((i, list(p_ids), list(r_ids)))
    out: list[tuple[float | None, float, int]] = [(None, 0.0, 0)] * len(replies)
    if not items:
        return out
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    slim = _accepts_logits_to_keep(model)
    was_training = model.training
    model.eval()
    batches = token_batches([len(p) + len(r) for _, p, r in items], len(items), max_batch_tokens if slim else 1)
    try:
        with ctx, torch.no_grad():
            for idx in batches:
                batch = [items[k] for k in idx]
                width = max(len(p) + len(r) for _, p, r in batch)
                keep = max(len(r) for _, _, r in batch) + 1
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (_, p, r) in enumerate(batch):
                    seq = p + r
                    ids[row, width - len(seq):] = torch.tensor(seq)
                    mask[row, width - len(seq):] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs = {"logits_to_keep": keep} if slim else {}
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), **kwargs).logits
                logits = logits[:, -keep:]
                # logits[:, j] predicts the token at position width - keep + j + 1
                for row, (i, _, r) in enumerate(batch):
                    k = len(r)
                    logp = torch.log_softmax(logits[row, keep - 1 - k:keep - 1].float(), dim=-1)
                    target = torch.tensor(r, device=logp.device)
                    nll = float(-logp.gather(-1, target.unsqueeze(-1)).sum())
                    out[i] = (math.exp(nll / k), nll, k)
                del logits
    finally:
        if was_training:
            model.train()
    return out


async def _endpoint_all(endpoint: str, prompts_messages: list[list[dict]], model: str, api_key: str | None,
                        concurrency: int, timeout_s: float, body_extra: dict, advance: Any,
                        transport: httpx.AsyncBaseTransport | None,
                        on_result: Callable[[int, GenResult], None] | None = None) -> list[GenResult]:
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
            result = GenResult(text=text.strip(), latency_ms=latency,
                               new_tokens=int(usage.get("completion_tokens") or 0))
            if on_result is not None:
                on_result(i, result)
            advance(1)
            return result

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts_messages))))


def generate_via_endpoint(endpoint: str, prompts_messages: list[list[dict]], *, model: str = "kefu",
                          api_key: str | None = None, concurrency: int = 8, timeout_s: float = 120.0,
                          max_new_tokens: int = 64, progress: bool = False,
                          transport: httpx.AsyncBaseTransport | None = None,
                          on_result: Callable[[int, GenResult], None] | None = None, **decoding: Any
                          ) -> list[GenResult]:
    """One reply per message list from an OpenAI-compatible chat endpoint (vLLM, ``kefu serve``...), in order;
    ``on_result(index, result)`` is called as each reply arrives (to write it to disk at once)."""
    settings = decoding_settings(max_new_tokens, **decoding)
    body = {"max_tokens": settings.pop("max_new_tokens"), "stream": False}
    sampling = settings.pop("do_sample")
    body["temperature"] = settings.pop("temperature", 1.0) if sampling else 0.0
    body.update({k: v for k, v in settings.items() if k in ("top_p", "top_k", "repetition_penalty")})
    with progress_bar(len(prompts_messages), "requesting", progress) as advance:
        return asyncio.run(_endpoint_all(endpoint, prompts_messages, model, api_key, concurrency, timeout_s, body,
                                         advance, transport, on_result))
