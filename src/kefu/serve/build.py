"""Assemble a ChatService from config + CLI choices: base model, adapters (from a run or name=path), engine, KG,
router, feedback store. Shared by ``kefu serve`` and the benchmark."""

from __future__ import annotations

import logging
from pathlib import Path

from kefu.artifacts.run import TrainRun, is_adapter
from kefu.kg.replies import ReplyIndex
from kefu.kg.store import KnowledgeGraph
from kefu.kg.tools import SQLiteOrderBackend
from kefu.loop.feedback import FeedbackStore
from kefu.serve.config import ServeConfig
from kefu.serve.engine import LocalEngine, RemoteEngine
from kefu.serve.metrics import Metrics
from kefu.serve.pipeline import ChatService
from kefu.serve.router import Router, RouterModel, default_router_path
from kefu.serve.shared_state import serving_state
from kefu.train.models import DEFAULT_MODEL, load_model
from kefu.types import KefuError

log = logging.getLogger("kefu.serve")


def parse_adapters(items: list[str]) -> dict[str, str]:
    """``--adapter name=path`` options as {name: path}; each path must be a PEFT adapter folder."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise KefuError(f"--adapter {item!r}: expected name=path")
        if not is_adapter(path):
            raise KefuError(f"--adapter {item}: {path}/adapter_config.json not found")
        out[name] = path
    return out


def load_trim(path: str | None):
    """The vocabulary trim named by ``serve.trim_vocab`` (None when unset); warns when its quality check failed."""
    if not path:
        return None
    from kefu.train.vocab import VocabTrim  # deferred: heavy (torch)

    trim = VocabTrim.load(path)
    quality = trim.quality or {}
    if quality.get("quality_ok") is False:
        log.warning("vocabulary trim %s failed its quality check at export (%s); serving it anyway as configured",
                    path, {k: quality.get(k) for k in ("exact_match", "token_agreement")})
    log.info("vocabulary trim: decoding over %d of %d tokens", len(trim.keep_ids), trim.vocab_size)
    return trim


def load_router(config: ServeConfig, run_dir: Path | None) -> Router:
    """The fitted router of the run (or ``$KEFU_HOME``) when there is one, else rules only."""
    for path in ([default_router_path(run_dir)] if run_dir else []) + [default_router_path()]:
        if path.exists():
            model = RouterModel.load(path)
            log.info("router: %s (threshold %.3f)", path, model.threshold)
            return Router(model, config.handoff_after_failures)
    log.info("router: no fitted classifier found, rules only (run `kefu serve router fit`)")
    return Router(None, config.handoff_after_failures)


def serves_base_model_only(config: ServeConfig, *, run: str | None, adapters: dict[str, str] | None,
                           registry: bool = False) -> bool:
    """True when a local engine would put the untuned base model in front of customers: no run, no adapter, no
    registry to follow."""
    return config.engine == "local" and not (run or adapters or registry)


def build_service(config: ServeConfig, *, run: str | None = None, adapters: dict[str, str] | None = None,
                  feedback_url: str | None = None, kg=None, engine=None, registry: bool = False):
    """Everything ``kefu serve`` runs. ``engine`` may be injected (tests, bench). Sessions, the response cache and
    its single flight are in process, or in Redis with the postgres state backend (``kefu.state``) so that replicas
    share them.

    ``run`` (a folder or a name under ``$KEFU_HOME/runs``) must be a finished training run: its adapter is served
    under the run's name, and its base model is the one served unless ``config.model`` names another. With no run,
    adapter or registry, no model is loaded (the service answers from the light path, past replies and handoff)
    unless ``config.allow_base_model``."""
    adapters = dict(adapters or {})
    run_dir = None
    base = config.model
    if run:
        train_run = TrainRun.named(run).require_finished()
        run_dir = train_run.path
        adapters.setdefault(run_dir.name, str(train_run.adapter_dir))
        base = base or train_run.base_model()
    if base is None:
        base = DEFAULT_MODEL
    no_model = engine is None and not config.allow_base_model and serves_base_model_only(
        config, run=run, adapters=adapters, registry=registry)
    if no_model:
        log.warning("no trained run: answering with the knowledge graph, the shop's past replies and handoff to a "
                    "human; the untuned base model is not served (pass --run RUN, or --allow-base-model)")
    elif engine is None:
        if config.engine == "remote":
            if not config.remote_url:
                raise KefuError("--engine remote needs --remote-url (an OpenAI-compatible server, e.g. vLLM)")
            engine = RemoteEngine(config.remote_url, base_name=base, adapters=list(adapters),
                                  api_key=config.remote_api_key, timeout_s=config.remote_timeout_s,
                                  retries=config.remote_retries, max_new_tokens=config.max_new_tokens,
                                  repetition_penalty=config.repetition_penalty,
                                  sampling_extras=config.remote_sampling_extras)
        else:
            import torch

            if config.torch_threads:
                torch.set_num_threads(config.torch_threads)
            model, tokenizer = load_model(base, dtype=torch.float32)
            engine = LocalEngine(model, tokenizer, base_name=str(base), adapters=adapters,
                                 max_batch_size=config.max_batch_size, batch_wait_ms=config.batch_wait_ms,
                                 max_new_tokens=config.max_new_tokens, quantize=config.quantize,
                                 trim=load_trim(config.trim_vocab), draft_tokens=config.draft_tokens,
                                 repetition_penalty=config.repetition_penalty,
                                 no_repeat_ngram_size=config.no_repeat_ngram_size)
    if kg is None:
        kg = KnowledgeGraph.open(config.kg_url)
    metrics = Metrics()
    return ChatService(engine, config=config, router=load_router(config, run_dir),
                       feedback=FeedbackStore.open(feedback_url), kg=kg, order_backend=SQLiteOrderBackend(kg),
                       base_model=str(base), replies=load_replies(config, run_dir), metrics=metrics,
                       exemplars=TrainRun(run_dir).exemplars() if run_dir else 0,
                       **serving_state(config, metrics))


def load_replies(config: ServeConfig, run_dir: Path | None) -> ReplyIndex | None:
    """The shop's past replies: ``serve.replies`` (an index file, or prepared data indexed now), else the run's."""
    source = config.replies or (str(TrainRun(run_dir).replies_file) if run_dir else None)
    if not source or not Path(source).exists():
        return None
    index = ReplyIndex.load(source) if source.endswith(".npz") else ReplyIndex.from_data(source)
    log.info("past replies: %d from %s", len(index), source)
    return index
