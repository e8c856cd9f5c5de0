"""Generation engines: a local transformers engine with continuous batching and LoRA adapters, and a remote one.

One module per concept: ``base`` (the ``Engine`` protocol, ``EngineError``, the prompt), ``local`` (the continuous-
batching scheduler, ``LocalEngine``), ``prepare`` (readying a loaded model for serving: vocabulary trim,
quantisation, adapters, stop tokens, sampling filters), ``batch`` (the running rows' KV cache), ``draft`` (prompt-
lookup speculation) and ``remote`` (``RemoteEngine``, any OpenAI-compatible server). Both engines raise
``EngineError``; the pipeline turns that into a fallback answer, never a 5xx.
"""

from kefu.serve.engine.base import Engine, EngineError, collect, render
from kefu.serve.engine.draft import lookup_draft
from kefu.serve.engine.local import LocalEngine
from kefu.serve.engine.remote import RemoteEngine

__all__ = ["Engine", "EngineError", "LocalEngine", "RemoteEngine", "collect", "lookup_draft", "render"]
