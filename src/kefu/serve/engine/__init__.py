"""Generation engines: a local transformers engine with continuous batching and LoRA adapters, and a remote one.

One module per concept: ``base`` (the ``Engine`` protocol, ``EngineError``, the prompt, stop strings and
``Generation.finish_reason``, ``token_budget`` per intent), ``local`` (the continuous-
batching scheduler, ``LocalEngine``), ``prepare`` (readying a loaded model for serving: vocabulary trim,
quantisation, adapters, stop tokens, sampling filters), ``batch`` (the running rows' KV cache), ``draft`` (prompt-
lookup speculation), ``repetition`` (repetition penalty and no-repeat n-grams per row) and ``remote`` (``RemoteEngine``, any OpenAI-compatible server). Both engines raise
``EngineError``; the pipeline turns that into a fallback answer, never a 5xx.
"""

from kefu.serve.engine.base import (TURN_STOPS, Engine, EngineError, Generation, StopText, collect, finish_reason,
                                    render, token_budget)
from kefu.serve.engine.draft import lookup_draft
from kefu.serve.engine.local import LocalEngine
from kefu.serve.engine.remote import RemoteEngine

__all__ = ["TURN_STOPS", "Engine", "EngineError", "Generation", "LocalEngine", "RemoteEngine", "StopText", "collect",
           "finish_reason", "lookup_draft", "render", "token_budget"]
