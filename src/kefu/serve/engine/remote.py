"""An OpenAI-compatible server as the engine (vLLM, TGI, llama.cpp server ...): httpx, timeouts, retries.

vLLM with ``--enable-lora`` picks the adapter by model name, so per-request adapters work as they do locally.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from kefu.serve.engine.base import EngineError


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
