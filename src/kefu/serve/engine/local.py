"""The local engine: a transformers model (+ LoRA adapters) with continuous batching in one generation thread.

Continuous batching is iteration-level scheduling, as vLLM does. A request is prefilled alone (no padding) and joins
the running batch at the next decode step; a finished row leaves at once, so a short answer never waits for a long one
and a new request never waits for a whole batch. Each step is one forward over every active row with a left-padded
KV cache (``batch.KVBatch``) and per-row positions; each row streams its own text. Up to ``max_batch_size`` rows; an
idle engine waits ``batch_wait_ms`` for companions. LoRA adapters (PEFT) are chosen per row (``adapter_names``), so
requests for different adapters share steps, and can be loaded while serving. Greedy rows speculate by prompt lookup
(``draft_tokens``, ``draft.lookup_draft``): the drafted tokens are verified in the same step, and the longest prefix
the model agrees with is kept, so output is unchanged and steps are fewer. How the model is readied (trim, INT8,
adapters) is ``prepare``'s.

Decoding ends: each row has its own repetition penalty and no-repeat n-gram size (``repetition``; the engine's
defaults are ``ServeConfig``'s, a request may override them), applied to every position of a step before the greedy
choice, the draft verification and sampling, so speculation never changes a greedy answer under them either. A row
stops on EOS or a template stop token, on a stop string (``base.TURN_STOPS`` plus the request's ``stop``; never sent,
a tail that might begin one is held back), or at its token budget; ``Generation.finish_reason`` says which.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from kefu.heap import release_freed_memory
from kefu.serve.config import ServeConfig
from kefu.serve.engine.base import TURN_STOPS, EngineError, Finished, Generation, StopText, render
from kefu.serve.engine.batch import KVBatch
from kefu.serve.engine.draft import lookup_draft
from kefu.serve.engine.prepare import attach_adapter, prepare_model, stop_ids, top_filters
from kefu.serve.engine.repetition import History, control_repetition
from kefu.train.template import prompt_add_special_tokens

log = logging.getLogger("kefu.serve.engine")

_DEFAULTS = ServeConfig()  # the engine's defaults for repetition control are the serve config's


@dataclass
class _Request:
    """One ``stream`` call as the generation thread sees it; ``push`` hands text (or an error) to its event loop."""

    prompt: str
    adapter: str | None
    max_new_tokens: int
    temperature: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stops: tuple[str, ...] = ()
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    first_token_at: float | None = None

    def push(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # loop closed: the client is gone
            self.cancelled = True


class _Row:
    """One request being decoded: its prompt and generated ids, the position of ``last`` (the newest token, not yet
    in the cache), how much text was decoded (``sent``: through ``stop_text``, which holds back a possible stop
    string's start), its repetition ``history``, and why it ended (``finish``: "stop" / "length")."""

    __slots__ = ("req", "prompt", "ids", "position", "sent", "last", "done", "history", "stop_text", "finish")

    def __init__(self, req: _Request, prompt: list[int], first: int):
        self.req, self.prompt, self.ids, self.position, self.sent, self.last, self.done = \
            req, prompt, [], len(prompt), 0, first, False
        self.history = History(self.ids, req.repetition_penalty, req.no_repeat_ngram_size)
        self.stop_text = StopText(req.stops)
        self.finish: str | None = None


class LocalEngine:
    """transformers model + tokenizer (+ LoRA adapters) with continuous batching in one generation thread."""

    name = "local"

    def __init__(self, model, tokenizer, *, base_name: str = "base", adapters: dict[str, str] | None = None,
                 max_batch_size: int = 8, batch_wait_ms: float = 10.0, max_new_tokens: int = 128,
                 quantize: str = "none", trim=None, draft_tokens: int = 4,
                 repetition_penalty: float = _DEFAULTS.repetition_penalty,
                 no_repeat_ngram_size: int = _DEFAULTS.no_repeat_ngram_size, stop: Sequence[str] = TURN_STOPS):
        import torch

        self.torch = torch
        model, self.trimmed_vocab = prepare_model(model, tokenizer, quantize=quantize, trim=trim)
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:  # prefill pads prompts of a group on the left with it
            tokenizer.pad_token = tokenizer.eos_token
        self.base_name = base_name
        self.adapters: dict[str, str] = {}
        self.quantize = quantize
        self.serve_base = True  # False once the untuned base model must not answer (``retire_base``)
        self.merged: str | None = None  # the adapter merged into the weights, when one serves all traffic
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_new_tokens = max_new_tokens
        self.draft_tokens = draft_tokens  # prompt-lookup tokens verified per step for greedy rows (0: off)
        _check_repetition(repetition_penalty, no_repeat_ngram_size)
        self.repetition_penalty = repetition_penalty  # per-request defaults (1.0 / 0: off)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.stop = tuple(stop)  # stop strings of every request; a request's ``stop`` adds to them
        self.drafted = self.accepted = 0  # draft tokens proposed / confirmed by the model (metrics, tests, bench)
        self.heap_trims = 0  # times freed memory was handed back to the OS on going idle
        self._inbox: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._stopping = False
        self._model_lock = threading.Lock()
        self.batches: deque[int] = deque(maxlen=1000)  # active rows each time requests joined (metrics, tests, bench)
        self.ttfts: deque[float] = deque(maxlen=1000)  # queue + prefill time to the first generated token, s
        self.eos_ids = stop_ids(model, tokenizer)
        self._top_filters = top_filters(model.generation_config)
        self.add_special_tokens = prompt_add_special_tokens(tokenizer)
        for adapter_name, path in (adapters or {}).items():
            self.load_adapter(adapter_name, path)

    # -- adapters -----------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return ([self.base_name] if self.serve_base else []) + list(self.adapters)

    def load_adapter(self, name: str, path: str) -> None:
        """Load (or replace) a LoRA adapter while serving; requests naming ``name`` use it from their next step. A
        merged adapter is taken back out of the weights first, and merged again when it is still the only one."""
        with self._model_lock:
            self._unmerge()
            self.model = attach_adapter(self.model, name, path)
            self.adapters[name] = str(path)
            self._merge_single()

    def retire_base(self) -> None:
        """Stop serving the untuned base model (it must not answer customers): it leaves ``models()`` — with no
        adapter yet, nothing is served until one is loaded (``kefu serve --registry`` before any promotion) — and
        whenever one adapter serves all traffic it is merged into the weights, now or when it is loaded, so a decode
        step pays no LoRA cost (PEFT's per-row ``adapter_names`` path splits each LoRA layer's batch by adapter)."""
        with self._model_lock:
            self.serve_base = False
            self._merge_single()

    def _merge_single(self) -> None:
        """Merge the one adapter into the weights when the base is not served (int8 weights cannot take it)."""
        from peft import PeftModel

        if (self.serve_base or self.merged or len(self.adapters) != 1 or self.quantize != "none"
                or not isinstance(self.model, PeftModel)):
            return
        name = next(iter(self.adapters))
        self.model.set_adapter(name)
        self.model.merge_adapter()
        self.merged = name

    def _unmerge(self) -> None:
        if self.merged:
            self.model.unmerge_adapter()
            self.merged = None

    # -- continuous batching ------------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="kefu-gen", daemon=True)
                self._thread.start()

    def _admit(self, active: list[_Row]) -> list[_Request]:
        """New requests for free rows: waits (``batch_wait_ms``, for companions) only when nothing is decoding."""
        free = self.max_batch_size - len(active)
        new: list[_Request] = []
        if free <= 0:
            return new
        if not active:
            try:
                new.append(self._inbox.get(timeout=0.2))
            except queue.Empty:
                return new
            deadline = time.perf_counter() + self.batch_wait_s
            while len(new) < free and (remaining := deadline - time.perf_counter()) > 0:
                try:
                    new.append(self._inbox.get(timeout=remaining))
                except queue.Empty:
                    break
        while len(new) < free:
            try:
                new.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return [r for r in new if not r.cancelled]

    def _loop(self) -> None:
        """The generation thread: admit requests between decode steps, one batched step for every active row."""
        torch = self.torch
        active: list[_Row] = []
        batch = KVBatch(torch)
        while not self._stopping:
            new: list[_Request] = []
            try:
                active = self._finish_rows(active, batch)  # clients gone since the last step free their rows
                new = self._admit(active)
                with self._model_lock, torch.inference_mode():
                    for group in self._prefill_groups(new):
                        rows, cache, mask = self._prefill(group)
                        batch.add(cache, mask)
                        active.extend(rows)
                    if new and active:
                        self.batches.append(len(active))
                    active = self._finish_rows(active, batch)
                    if active:
                        self._step(active, batch)
                        active = self._finish_rows(active, batch)
                        if not active:  # the engine goes idle: return the batch's freed KV memory to the OS
                            self.heap_trims += release_freed_memory()
            except Exception as exc:
                log.exception("generation failed with %d active requests", len(active))
                error = EngineError(f"local generation failed: {type(exc).__name__}: {exc}")
                waiting = {id(row.req) for row in active}
                for req in [row.req for row in active] + [r for r in new if id(r) not in waiting]:
                    req.push(error)
                active, batch = [], KVBatch(torch)
        # closed: no client waits forever, neither those being decoded nor those still queued
        closed = EngineError("the engine was closed")
        for row in active:
            row.req.push(closed)
        self._fail_queued(closed)

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                self._inbox.get_nowait().push(error)
            except queue.Empty:
                return

    def _forward(self, adapters: list[str | None], keep: int = 1, **inputs):
        """One model call; a PEFT model gets each row's adapter (``__base__`` for none), so rows mix adapters."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel) and not self.merged:  # merged: every row is that adapter's
            inputs["adapter_names"] = [a or "__base__" for a in adapters]
        return self.model(use_cache=True, logits_to_keep=keep, **inputs)

    def _prefill_groups(self, requests: list[_Request]) -> list[list[tuple[_Request, list[int]]]]:
        """Tokenised new requests in groups of similar length: a group is prefilled as one left-padded batch (one
        bigger matmul beats several small ones), and similar lengths keep the padding small."""
        tokenized = sorted(((req, self.tokenizer(req.prompt, add_special_tokens=self.add_special_tokens)["input_ids"])
                            for req in requests), key=lambda pair: len(pair[1]))
        groups: list[list[tuple[_Request, list[int]]]] = []
        for req, ids in tokenized:
            if groups and len(ids) - len(groups[-1][0][1]) <= max(16, len(ids) // 4):
                groups[-1].append((req, ids))
            else:
                groups.append([(req, ids)])
        return groups

    def _prefill(self, group: list[tuple[_Request, list[int]]]):
        """Prefill prompts together (left-padded, per-row positions): the rows still going, their cache and mask."""
        from transformers import DynamicCache

        torch = self.torch
        width = max(len(ids) for _, ids in group)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in group])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in group])
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache()
        requests = [req for req, _ in group]
        out = self._forward([req.adapter for req in requests], input_ids=input_ids, attention_mask=mask,
                            position_ids=positions, cache=cache)
        rows = []
        now = time.perf_counter()
        for (req, ids), token in zip(group, self._choose(out.logits[:, -1], requests)):
            req.first_token_at = req.first_token_at or now
            row = _Row(req, ids, token)
            row.done = not self._accept(row, token)
            rows.append(row)
        return rows, cache, mask

    def _drafts(self, active: list[_Row]) -> list[list[int]]:
        """Draft tokens per row: greedy rows only (a sampled row would need rejection sampling), never more than
        the row may still generate."""
        if not self.draft_tokens:
            return [[] for _ in active]
        return [lookup_draft(row.prompt + row.ids, min(self.draft_tokens, row.req.max_new_tokens - len(row.ids) - 1))
                if row.req.temperature == 0 else [] for row in active]

    def _step(self, active: list[_Row], batch: KVBatch) -> None:
        """One decode step for every active row. Rows with draft tokens feed ``[last, *draft]`` and keep the
        longest prefix of the draft the model itself would have produced, plus the model's next token, so greedy
        output is exactly what one-token steps give; the cache entries of rejected drafts are dropped."""
        torch = self.torch
        drafts = self._drafts(active)
        width = 1 + max(len(d) for d in drafts)
        pad = self.tokenizer.pad_token_id
        out = self._forward([r.req.adapter for r in active], keep=width,
                            input_ids=torch.tensor([[r.last, *d] + [pad] * (width - 1 - len(d))
                                                    for r, d in zip(active, drafts)]),
                            position_ids=torch.tensor([[r.position + j for j in range(width)] for r in active]),
                            attention_mask=batch.extend_mask(width), cache=batch.cache)
        logits = control_repetition(out.logits, [r.history for r in active], drafts)
        # position 0 answers ``last`` (greedy or sampled); a drafted row keeps the draft's prefix that matches the
        # model's greedy choices at positions 0.., then the model's next token (only greedy rows get drafts)
        picks = [[token] for token in self._choose(logits[:, 0], [r.req for r in active])]
        if width > 1:
            greedy = logits.argmax(-1).tolist()
            for i, (row, draft) in enumerate(zip(active, drafts)):
                if not draft:
                    continue
                n = 0
                while n < len(draft) and draft[n] == greedy[i][n]:
                    n += 1
                self.drafted += len(draft)
                self.accepted += n
                picks[i] = draft[:n] + [greedy[i][n]]
        stale = []
        for row, tokens in zip(active, picks):
            for token in tokens:
                row.position += 1
                row.last = token
                if not self._accept(row, token):
                    row.done = True
                    break
            stale.append(width - len(tokens))  # cache entries of rejected or padded drafts
        if width > 1:
            batch.drop_last(stale)

    def _choose(self, logits, requests: list[_Request]) -> list[int]:
        """Greedy for temperature 0, else sampling with the request's temperature and the model's top-k/top-p."""
        torch = self.torch
        picks = logits.argmax(-1).tolist()
        for i, req in enumerate(requests):
            if req.temperature > 0:
                scores = self._top_filters(None, logits[i:i + 1].float() / req.temperature)
                picks[i] = int(torch.multinomial(torch.softmax(scores, -1), 1))
        return picks

    def _accept(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row`` and stream any new complete text; False when the row is finished."""
        req = row.req
        if req.cancelled:
            return False
        if token in self.eos_ids:
            row.finish = "stop"
            return False
        row.ids.append(token)
        row.history.note()
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > row.sent:  # not half of a multi-byte character
            piece = row.stop_text.feed(text[row.sent:])
            row.sent = len(text)
            if piece:
                req.push(piece)
            if row.stop_text.stopped:
                row.finish = "stop"
                return False
        if len(row.ids) >= req.max_new_tokens:
            row.finish = "length"
            return False
        return True

    def _close_row(self, row: _Row) -> None:
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True).rstrip("\ufffd")
        rest = row.stop_text.feed(text[row.sent:]) if len(text) > row.sent else ""
        rest += row.stop_text.flush()
        if rest:
            row.req.push(rest)
        row.req.push(Finished(row.finish or "stop", len(row.prompt), len(row.ids)))

    def _finish_rows(self, active: list[_Row], batch: KVBatch) -> list[_Row]:
        """Close finished or cancelled rows and drop them from the cache."""
        keep = [i for i, row in enumerate(active) if not (row.done or row.req.cancelled)]
        if len(keep) == len(active):
            return active
        kept = set(keep)  # (a client may cancel meanwhile: decide once)
        for i, row in enumerate(active):
            if i not in kept:
                self._close_row(row)
        batch.select(keep)
        return [active[i] for i in keep]

    def stream(self, messages: list[dict[str, str]], *, model: str | None = None, max_new_tokens: int | None = None,
               temperature: float = 0.0, repetition_penalty: float | None = None,
               no_repeat_ngram_size: int | None = None, stop: list[str] | None = None) -> Generation:
        """The answer's text pieces; ``.finish_reason`` ("stop" / "length") once they are exhausted. Repetition
        control left None takes the engine's defaults; ``stop`` strings add to the engine's (``TURN_STOPS``)."""
        return Generation(self._generate(messages, model, max_new_tokens, temperature, repetition_penalty,
                                         no_repeat_ngram_size, stop))

    async def _generate(self, messages, model, max_new_tokens, temperature, repetition_penalty,
                        no_repeat_ngram_size, stop) -> AsyncIterator[str | Finished]:
        adapter = None if model in (None, "", self.base_name) else model
        if adapter is not None and adapter not in self.adapters:
            raise EngineError(f"unknown adapter {model!r}")
        if adapter is None and not self.serve_base:
            raise EngineError(f"the base model {self.base_name!r} is not served; ask for one of {self.models()}")
        if temperature < 1e-3:  # a tiny temperature overflows logits/temperature: treat it as greedy
            temperature = 0.0
        penalty = self.repetition_penalty if repetition_penalty is None else repetition_penalty
        ngram = self.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size
        _check_repetition(penalty, ngram)
        prompt = render(self.tokenizer, messages)
        req = _Request(prompt, adapter, max_new_tokens or self.max_new_tokens, temperature,
                       asyncio.get_running_loop(), asyncio.Queue(), penalty, ngram, self.stop + tuple(stop or ()))
        self._ensure_started()
        self._inbox.put(req)
        try:
            while True:
                item = await req.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            req.cancelled = True
            if req.first_token_at is not None:
                self.ttfts.append(req.first_token_at - req.enqueued)

    async def close(self) -> None:
        """Stop the generation thread; requests still running or queued end with ``EngineError``."""
        self._stopping = True
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
        if thread is None or not thread.is_alive():
            self._fail_queued(EngineError("the engine was closed"))


def _check_repetition(penalty: float, ngram: int) -> None:
    if not penalty > 0 or ngram < 0:
        raise ValueError(f"repetition_penalty must be > 0 and no_repeat_ngram_size >= 0, not {penalty}, {ngram}")
