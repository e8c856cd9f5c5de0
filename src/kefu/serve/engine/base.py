"""What every engine shares: the ``Engine`` protocol, ``EngineError``, and the prompt a model is given."""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from kefu.train.template import render_prompt


class EngineError(RuntimeError):
    """The engine could not produce an answer (down, timed out, crashed)."""


class Engine(Protocol):
    """A text generator the pipeline streams answers from (``LocalEngine``, ``RemoteEngine``, test fakes)."""

    name: str

    def models(self) -> list[str]: ...

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


async def collect(stream: AsyncIterator[str]) -> str:
    """The whole text of a streamed answer."""
    return "".join([piece async for piece in stream])


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt string: the train stage's template (exactly what the model was trained on)."""
    return render_prompt(tokenizer, messages, add_generation_prompt=True)
