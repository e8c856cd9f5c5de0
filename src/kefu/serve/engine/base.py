"""What every engine shares: the ``Engine`` protocol, ``EngineError``, the prompt a model is given, where an answer
stops (stop strings, ``Generation.finish_reason``) and how long it may be (``token_budget``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Iterable, Protocol

from kefu.train.template import render_prompt

# Text that starts the next speaker's line: the model has finished the agent's turn and goes on to write the
# conversation's next one. Always stop strings (a request's ``stop`` adds to them), never part of an answer. "客服："
# counts at the start of a later line only: a reply that opens with its own role label is not cut to nothing.
TURN_STOPS = ("\n用户：", "\n用户:", "\n顾客：", "\n顾客:", "\n客服：", "\n客服:", "\nuser", "\nUser",
              "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>")


class EngineError(RuntimeError):
    """The engine could not produce an answer (down, timed out, crashed)."""


class Engine(Protocol):
    """A text generator the pipeline streams answers from (``LocalEngine``, ``RemoteEngine``, test fakes).

    ``stream`` yields text pieces; the engines' streams are ``Generation`` objects whose ``finish_reason`` says, once
    the pieces are exhausted, why the answer ended (read it with ``finish_reason(stream)``, which also accepts plain
    async generators of test fakes)."""

    name: str

    def models(self) -> list[str]: ...

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0, repetition_penalty: float | None = None,
               no_repeat_ngram_size: int | None = None, stop: list[str] | None = None) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Finished:
    """An engine's last item after the text: why the answer ended ("stop": EOS, a stop token or string; "length":
    the token budget)."""

    reason: str
    prompt_tokens: int | None = None  # what the engine counted, when it counts (usage in the API response)
    completion_tokens: int | None = None


class Generation:
    """An engine's answer: an async iterator of text pieces (``async for piece in engine.stream(...)``), with
    ``finish_reason`` ("stop" / "length") set when the pieces are exhausted; None before, or when the stream was
    closed early or failed."""

    def __init__(self, items: AsyncIterator[str | Finished]):
        self._items = items
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> str:
        item = await self._items.__anext__()
        if isinstance(item, Finished):
            self.finish_reason = item.reason
            self.prompt_tokens, self.completion_tokens = item.prompt_tokens, item.completion_tokens
            await self._items.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        await self._items.aclose()


def finish_reason(stream: AsyncIterator[str]) -> str | None:
    """Why an exhausted engine stream ended: "stop", "length", or None (unknown: an engine that does not say)."""
    return getattr(stream, "finish_reason", None)


class StopText:
    """A streamed answer cut at the first stop string, which is never emitted: ``feed`` returns what is safe to send
    now, holding back a tail that could be the start of a stop string; ``flush`` returns it at the end."""

    __slots__ = ("stops", "pending", "stopped")

    def __init__(self, stops: Iterable[str]):
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        pending = self.pending + text
        cuts = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.pending, self.stopped = "", True
            return pending[:min(cuts)]
        hold = 0
        for stop in self.stops:  # the longest tail of ``pending`` that begins some stop string
            for k in range(min(len(stop) - 1, len(pending)), hold, -1):
                if pending.endswith(stop[:k]):
                    hold = k
                    break
        self.pending = pending[len(pending) - hold:] if hold else ""
        return pending[:len(pending) - hold]

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return "" if self.stopped else out


def token_budget(config, intent: str | None, requested: int | None = None) -> int:
    """The most new tokens an answer may take: the intent's entry of ``config.max_new_tokens_by_intent`` (else
    ``config.max_new_tokens``), never above ``max_new_tokens``, lowered to what the client ``requested``."""
    cap = config.max_new_tokens
    if intent:
        cap = min(cap, config.max_new_tokens_by_intent.get(intent, cap))
    return min(cap, requested) if requested else cap


async def collect(stream: AsyncIterator[str]) -> str:
    """The whole text of a streamed answer."""
    return "".join([piece async for piece in stream])


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt string: the train stage's template (exactly what the model was trained on)."""
    return render_prompt(tokenizer, messages, add_generation_prompt=True)
