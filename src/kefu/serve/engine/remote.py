"""An OpenAI-compatible server as the engine (vLLM, TGI, llama.cpp server ...): httpx, timeouts, retries.

vLLM with ``--enable-lora`` picks the adapter by model name (``--lora-modules NAME=PATH``), so the request's model is
sent as it is (the base under ``base_name``, which ``kefu export --vllm`` serves as ``--served-model-name``) and a name
the engine was not given is refused before any request, as the local engine refuses it. Stop
strings (``TURN_STOPS`` plus the request's ``stop``) are applied here, on the streamed text, as the local engine does,
and the response is closed at the first one. ``repetition_penalty`` is sent only with ``sampling_extras`` (vLLM's
extra field, which counts prompt tokens too; OpenAI's API rejects unknown fields); ``no_repeat_ngram_size`` is the
local engine's only (no OpenAI-compatible server takes it).
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Sequence

from kefu.serve.engine.base import TURN_STOPS, EngineError, Finished, Generation, StopText


class RemoteEngine:
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp server ...): timeouts, retries with backoff."""

    name = "remote"

    def __init__(self, base_url: str, *, base_name: str = "base", adapters: list[str] | None = None,
                 api_key: str | None = None, timeout_s: float = 30.0, retries: int = 2, max_new_tokens: int = 128,
                 transport=None, repetition_penalty: float = 1.0, sampling_extras: bool = False,
                 stop: Sequence[str] = TURN_STOPS):
        import httpx

        self.base_name = base_name
        self.adapters = list(adapters or [])
        self.serve_base = True  # False once the untuned base model must not answer (``retire_base``)
        self.retries = retries
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.sampling_extras = sampling_extras  # send vLLM's extra sampling fields
        self.stop = tuple(stop)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, transport=transport,
                                        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))

    def models(self) -> list[str]:
        return ([self.base_name] if self.serve_base else []) + self.adapters

    def retire_base(self) -> None:
        """Stop asking for the untuned base model (it must not answer customers once a trained adapter is served):
        it leaves ``models()`` and a request for it is refused here, as the local engine refuses it."""
        if not self.adapters:
            raise EngineError("retire_base: no adapter is served, so nothing would be")
        self.serve_base = False

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0, repetition_penalty: float | None = None,
               no_repeat_ngram_size: int | None = None, stop: list[str] | None = None) -> Generation:
        """The answer's text pieces; ``.finish_reason`` (the server's, or "stop" at a stop string) once exhausted."""
        body = {"model": model or self.base_name, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True},  # token counts for the API's usage
                "max_tokens": max_new_tokens or self.max_new_tokens, "temperature": temperature}
        if self.sampling_extras:
            body["repetition_penalty"] = self.repetition_penalty if repetition_penalty is None else repetition_penalty
        return Generation(self._generate(body, self.stop + tuple(stop or ())))

    async def _generate(self, body: dict, stops: tuple[str, ...]) -> AsyncIterator[str | Finished]:
        import httpx

        # refused where the answer is read, as the local engine refuses them: no request leaves
        if body["model"] == self.base_name and not self.serve_base:
            raise EngineError(f"the base model {self.base_name!r} is not served; ask for one of {self.models()}")
        if body["model"] not in self.models():
            raise EngineError(f"unknown adapter {body['model']!r}")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            emitted = False
            stop_text = StopText(stops)
            reason, usage = None, None
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
                            break
                        try:
                            chunk = json.loads(data)
                            usage = chunk.get("usage") or usage  # the last chunk (stream_options.include_usage)
                            if not chunk.get("choices"):
                                continue
                            choice = chunk["choices"][0]
                            delta = choice.get("delta", {}).get("content") or ""
                        except (ValueError, KeyError, IndexError, AttributeError) as exc:
                            raise EngineError(f"remote engine sent a malformed chunk: {data[:100]}") from exc
                        reason = choice.get("finish_reason") or reason
                        piece = stop_text.feed(delta) if delta else ""
                        if piece:
                            emitted = True
                            yield piece
                        if stop_text.stopped:  # closing the response ends the server's generation too
                            reason = "stop"
                            break
                if rest := stop_text.flush():
                    yield rest
                usage = usage if isinstance(usage, dict) else {}
                yield Finished(reason or "stop", usage.get("prompt_tokens"), usage.get("completion_tokens"))
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
