"""Generation engines: a local transformers engine with micro-batching and LoRA adapters, and a remote one.

LocalEngine: requests wait in an asyncio queue for up to ``batch_wait_ms`` / ``max_batch_size``; each batch (one per
adapter) runs as one left-padded ``generate`` in a worker thread, and a batch streamer hands every row's new tokens
back to its own request, so each caller still streams. Adapters are PEFT LoRA adapters loaded with
``load_adapter``/``set_adapter`` and can be added while serving. CPU options: weight-only INT8 (``int8-weight``,
kefu.train.quant: int8 weights, bf16 activations) or torch.ao dynamic INT8 (``int8``, also quantises activations).

RemoteEngine: any OpenAI-compatible server (vLLM with ``--enable-lora`` picks the adapter by model name) via httpx,
with timeouts and retries. Both raise ``EngineError``; the pipeline turns that into a fallback answer, never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

log = logging.getLogger("kefu.serve.engine")

_END = object()


class EngineError(RuntimeError):
    """The engine could not produce an answer (down, timed out, crashed)."""


class Engine(Protocol):
    name: str

    def models(self) -> list[str]: ...

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


async def collect(stream: AsyncIterator[str]) -> str:
    return "".join([piece async for piece in stream])


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt string: the train stage's template (exactly what the model was trained on)."""
    from kefu.train.template import render_prompt

    return render_prompt(tokenizer, messages, add_generation_prompt=True)


@dataclass
class _Request:
    prompt: str
    adapter: str | None
    max_new_tokens: int
    temperature: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    first_token_at: float | None = None

    def push(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # loop closed: the client is gone
            self.cancelled = True


class _BatchStreamer:
    """transformers streamer for a whole batch: first ``put`` is the prompt, then one token per row per step."""

    def __init__(self, requests: list[_Request], tokenizer, eos_ids: set[int]):
        self.requests = requests
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.ids: list[list[int]] = [[] for _ in requests]
        self.sent: list[int] = [0] * len(requests)
        self.done = [False] * len(requests)
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        for row, token in enumerate(tokens):
            if self.done[row]:
                continue
            req = self.requests[row]
            if req.first_token_at is None:
                req.first_token_at = time.perf_counter()
            if token in self.eos_ids or req.cancelled:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half of a multi-byte character; wait for the rest
                pass
            elif len(text) > self.sent[row]:
                req.push(text[self.sent[row]:])
                self.sent[row] = len(text)
            if len(self.ids[row]) >= req.max_new_tokens:
                self.done[row] = True

    def end(self) -> None:
        for row, req in enumerate(self.requests):
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True).rstrip("\ufffd")
            if len(text) > self.sent[row]:
                req.push(text[self.sent[row]:])
            req.push(_END)
            self.done[row] = True


def _rows_done(streamer: _BatchStreamer):
    """Stopping criterion marking each row finished on EOS, its own token budget, or cancellation."""
    import torch
    from transformers import StoppingCriteria

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor(streamer.done, dtype=torch.bool, device=input_ids.device)

    return RowsDone()


class LocalEngine:
    """transformers model + tokenizer (+ LoRA adapters) with asyncio micro-batching."""

    name = "local"

    def __init__(self, model, tokenizer, *, base_name: str = "base", adapters: dict[str, str] | None = None,
                 max_batch_size: int = 8, batch_wait_ms: float = 10.0, max_new_tokens: int = 128,
                 quantize: str = "none", trim=None):
        import torch

        self.torch = torch
        self.trimmed_vocab: int | None = None
        if trim is not None:  # decode over the shop's tokens only (kefu.train.vocab); before INT8, stays fp32
            from kefu.train.vocab import VocabTrim, trim_model

            if isinstance(trim, VocabTrim):
                trim.check(tokenizer, "serve.trim_vocab")
            model = trim_model(model, trim)
            self.trimmed_vocab = len(trim.keep_ids if isinstance(trim, VocabTrim) else trim)
        if quantize == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif quantize == "int8-weight":  # adapters loaded below wrap the int8 layers and stay floating point
            from kefu.train.quant import quantize_int8_weights

            quantize_int8_weights(model)
        elif quantize != "none":
            raise ValueError(f"quantize must be none, int8 or int8-weight, not {quantize!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.base_name = base_name
        self.adapters: dict[str, str] = {}
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_new_tokens = max_new_tokens
        self.quantize = quantize
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kefu-gen")
        self._model_lock = threading.Lock()
        self.batches: deque[int] = deque(maxlen=1000)  # sizes of the recent batches (metrics, tests, bench)
        self.ttfts: deque[float] = deque(maxlen=1000)  # queue + prefill time to the first generated token, s
        eos = set()
        for source in (getattr(tokenizer, "eos_token_id", None), getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(x) for x in source)
        from kefu.train.template import prompt_add_special_tokens, stop_token_ids

        eos.update(stop_token_ids(tokenizer))
        self.eos_ids = eos
        self.add_special_tokens = prompt_add_special_tokens(tokenizer)
        for adapter_name, path in (adapters or {}).items():
            self.load_adapter(adapter_name, path)

    # -- adapters -----------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def load_adapter(self, name: str, path: str) -> None:
        """Load (or replace) a LoRA adapter while serving; requests naming ``name`` use it from the next batch."""
        from peft import PeftModel

        with self._model_lock:
            if isinstance(self.model, PeftModel):
                if name in self.model.peft_config:
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            self.adapters[name] = str(path)

    def _select(self, adapter: str | None):
        """Context manager selecting the adapter (or the bare base model) for one batch; caller holds the lock."""
        from contextlib import nullcontext

        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()

    # -- batching -------------------------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._batcher())

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if self._queue.empty():
                        break
                    batch.append(self._queue.get_nowait())
                    continue
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple[str | None, bool], list[_Request]] = {}
            for req in batch:
                if not req.cancelled:
                    groups.setdefault((req.adapter, req.temperature > 0), []).append(req)
            for group in groups.values():
                try:
                    await loop.run_in_executor(self._executor, self._run_batch, group)
                except Exception as exc:  # pragma: no cover - _run_batch reports its own errors
                    for req in group:
                        req.push(EngineError(str(exc)))

    def _run_batch(self, requests: list[_Request]) -> None:
        torch = self.torch
        self.batches.append(len(requests))
        streamer = _BatchStreamer(requests, self.tokenizer, self.eos_ids)
        try:
            with self._model_lock, torch.inference_mode():
                enc = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True,
                                     add_special_tokens=self.add_special_tokens)
                sample = requests[0].temperature > 0
                kwargs: dict[str, Any] = {"do_sample": sample}
                if sample:
                    kwargs["temperature"] = max(r.temperature for r in requests)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                with self._select(requests[0].adapter):
                    self.model.generate(**enc, max_new_tokens=max(r.max_new_tokens for r in requests),
                                        streamer=streamer, stopping_criteria=[_rows_done(streamer)],
                                        pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        except Exception as exc:
            log.exception("generation failed for a batch of %d", len(requests))
            for req in requests:
                req.push(EngineError(f"local generation failed: {type(exc).__name__}: {exc}"))

    async def stream(self, messages: list[dict[str, str]], *, model: str | None = None,
                     max_new_tokens: int | None = None, temperature: float = 0.0) -> AsyncIterator[str]:
        adapter = None if model in (None, "", self.base_name) else model
        if adapter is not None and adapter not in self.adapters:
            raise EngineError(f"unknown adapter {model!r}")
        if temperature < 1e-3:  # a tiny temperature overflows logits/temperature: treat it as greedy
            temperature = 0.0
        prompt = render(self.tokenizer, messages)
        self._ensure_started()
        assert self._queue is not None
        req = _Request(prompt, adapter, max_new_tokens or self.max_new_tokens, temperature,
                       asyncio.get_running_loop(), asyncio.Queue())
        await self._queue.put(req)
        try:
            while True:
                item = await req.queue.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            req.cancelled = True
            if req.first_token_at is not None:
                self.ttfts.append(req.first_token_at - req.enqueued)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class RemoteEngine:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp server ...): timeouts, retries with backoff."""

    name = "remote"

    def __init__(self, base_url: str, *, base_name: str = "base", adapters: list[str] | None = None,
                 api_key: str | None = None, timeout_s: float = 30.0, retries: int = 2, max_new_tokens: int = 128,
                 transport=None):
        import httpx

        self.base_name = base_name
        self.adapters = list(adapters or [])
        self.retries = retries
        self.max_new_tokens = max_new_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, transport=transport,
                                        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))

    def models(self) -> list[str]:
        return [self.base_name, *self.adapters]

    async def stream(self, messages: list[dict[str, str]], *, model: str | None = None,
                     max_new_tokens: int | None = None, temperature: float = 0.0) -> AsyncIterator[str]:
        import httpx

        body = {"model": model or self.base_name, "messages": messages, "stream": True,
                "max_tokens": max_new_tokens or self.max_new_tokens, "temperature": temperature}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            emitted = False
            try:
                async with self.client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code >= 500 or resp.status_code == 429:
                        raise EngineError(f"remote engine answered HTTP {resp.status_code}")
                    if resp.status_code >= 400:
                        text = (await resp.aread()).decode("utf-8", "replace")[:200]
                        raise EngineError(f"remote engine rejected the request: HTTP {resp.status_code}: {text}")
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        try:
                            chunk = json.loads(data)
                            delta = chunk["choices"][0].get("delta", {}).get("content") or ""
                        except (ValueError, KeyError, IndexError) as exc:
                            raise EngineError(f"remote engine sent a malformed chunk: {data[:100]}") from exc
                        if delta:
                            emitted = True
                            yield delta
                    return
            except (httpx.HTTPError, EngineError) as exc:
                last = exc
                retriable = isinstance(exc, httpx.TransportError) or "HTTP 5" in str(exc) or "HTTP 429" in str(exc)
                if emitted or not retriable or attempt == self.retries:
                    break
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        raise EngineError(f"remote engine failed after {self.retries + 1} attempts: {last}")

    async def close(self) -> None:
        await self.client.aclose()
