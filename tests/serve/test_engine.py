"""Engines: continuously batched local generation (same output as one at a time), streaming, LoRA adapters hot-swapped,
INT8 quantisation, and the remote OpenAI-compatible engine with retries."""

import asyncio
import json

import httpx
import pytest

from kefu.heap import release_freed_memory
from kefu.serve.build import load_trim
from kefu.serve.config import ServeConfig
from kefu.serve.engine import (TURN_STOPS, EngineError, LocalEngine, RemoteEngine, StopText, collect, finish_reason,
                               lookup_draft, render, token_budget)
from kefu.serve.engine.repetition import History, control_repetition
from kefu.testing import CUSTOMER, make_model, make_tokenizer
from kefu.train.template import prompt_add_special_tokens, stop_token_ids
from serve_support import tiny_model

PROMPTS = ["冲锋衣多少钱", "有黑色吗", "订单发货了吗，我等了好久", "你好"]
PENALTY, NGRAM = ServeConfig().repetition_penalty, ServeConfig().no_repeat_ngram_size  # the engine's defaults


def msgs(text):
    return [{"role": "user", "content": text}]


def test_batched_generation_matches_one_at_a_time(tiny):
    model, tok = tiny

    async def run(batch_size):
        engine = LocalEngine(model, tok, max_new_tokens=6, max_batch_size=batch_size, batch_wait_ms=50)
        outs = await asyncio.gather(*[collect(engine.stream(msgs(p))) for p in PROMPTS])
        await engine.close()
        return outs, engine.batches

    single, single_batches = asyncio.run(run(1))
    batched, batches = asyncio.run(run(8))
    assert list(single_batches) == [1, 1, 1, 1]
    assert max(batches) > 1, batches
    assert batched == single
    assert all(single)


class _ReplyOnly:
    """transformers' own repetition processors applied to the reply only (the engine's semantics): the reference."""

    def __init__(self, prompt_len, penalty, ngram):
        from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

        self.prompt_len = prompt_len
        self.processors = ([RepetitionPenaltyLogitsProcessor(penalty)] if penalty != 1.0 else []) + \
            ([NoRepeatNGramLogitsProcessor(ngram)] if ngram else [])

    def __call__(self, input_ids, scores):
        for processor in self.processors:
            scores = processor(input_ids[:, self.prompt_len:], scores)
        return scores


def _generate_ids(model, tok, text, max_new, penalty=PENALTY, ngram=NGRAM, stop_at_eos=True):
    """What ``generate`` answers for one prompt on its own (greedy, transformers' repetition processors on the
    reply), as token ids up to the end-of-turn token."""
    import torch
    from transformers import LogitsProcessorList

    enc = tok(render(tok, msgs(text)), return_tensors="pt", add_special_tokens=prompt_add_special_tokens(tok))
    stops = set(stop_token_ids(tok)) | {tok.eos_token_id}
    prompt_len = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=sorted(stops) if stop_at_eos else None,
                             logits_processor=LogitsProcessorList([_ReplyOnly(prompt_len, penalty, ngram)]))
    ids = out[0, prompt_len:].tolist()
    return ids[:next((i for i, t in enumerate(ids) if t in stops), len(ids))] if stop_at_eos else ids


def _generate_alone(model, tok, text, max_new, penalty=PENALTY, ngram=NGRAM):
    """``_generate_ids`` as text."""
    return tok.decode(_generate_ids(model, tok, text, max_new, penalty, ngram), skip_special_tokens=True)


@pytest.mark.parametrize("draft_tokens", [0, 4])  # one token per step / prompt-lookup drafts verified per step
@pytest.mark.parametrize("gap_s", [0.0, 0.01])  # all at once (prefilled together, left-padded) / one after another
@pytest.mark.parametrize("arch", ["gemma3", "llama"])  # gemma3: sliding-window layers (window 8 < the prompts)
def test_continuous_batching_matches_generate_alone(arch, gap_s, draft_tokens):
    """Requests of different lengths join and leave the running batch at different steps; each answer is still
    exactly what ``generate`` gives for that prompt alone, also when drafts are accepted in some rows and rejected
    in others of the same step."""
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok), seed=3).eval()
    texts = [CUSTOMER[1], CUSTOMER[5] * 3, CUSTOMER[0], CUSTOMER[4] * 2, CUSTOMER[6]]
    budgets = [12, 5, 20, 9, 15]
    want = [_generate_alone(model, tok, t, n) for t, n in zip(texts, budgets)]  # under ServeConfig's penalties
    assert want != [_generate_alone(model, tok, t, n, penalty=1.0, ngram=0) for t, n in zip(texts, budgets)]

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=32, max_batch_size=8, batch_wait_ms=0 if gap_s else 50,
                             draft_tokens=draft_tokens)

        async def ask(i):
            await asyncio.sleep(gap_s * i)  # arrive while the others decode
            return await collect(engine.stream(msgs(texts[i]), max_new_tokens=budgets[i]))

        outs = await asyncio.gather(*[ask(i) for i in range(len(texts))])
        await engine.close()
        return outs, list(engine.batches), engine

    got, batches, engine = asyncio.run(run())
    assert got == want
    assert max(batches) > 1, batches
    if draft_tokens:  # both branches of the verification ran
        assert 0 < engine.accepted < engine.drafted, (engine.accepted, engine.drafted)


def test_a_new_request_joins_a_running_batch(tiny):
    """A short request sent while a long answer is being decoded finishes first: it does not wait for the batch."""
    model, tok = tiny
    done: list[str] = []

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=200, max_batch_size=4, batch_wait_ms=0)
        long_stream = engine.stream(msgs(PROMPTS[2]), max_new_tokens=200)
        first = await long_stream.__anext__()  # the long answer is decoding now

        async def finish_long():
            rest = [p async for p in long_stream]
            done.append("long")
            return first + "".join(rest)

        async def short():
            out = await collect(engine.stream(msgs(PROMPTS[3]), max_new_tokens=2))
            done.append("short")
            return out

        await asyncio.gather(finish_long(), short())
        await engine.close()
        return list(engine.batches)

    batches = asyncio.run(run())
    assert done == ["short", "long"]
    assert 2 in batches


def test_a_client_that_goes_away_frees_its_row(tiny):
    """Closing a stream early stops its decoding: the next request decodes alone, not beside a 200-token ghost."""
    model, tok = tiny

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=200, max_batch_size=4, batch_wait_ms=0)
        long_stream = engine.stream(msgs(PROMPTS[2]), max_new_tokens=200)
        await long_stream.__anext__()
        await long_stream.aclose()  # the customer closed the page
        await collect(engine.stream(msgs(PROMPTS[3]), max_new_tokens=2))
        await engine.close()
        return list(engine.batches)

    assert asyncio.run(run()) == [1, 1]


def test_rows_with_different_adapters_share_steps(tiny, tmp_path):
    _, tok = tiny
    a = _make_adapter(tok, tmp_path / "a", 1)

    async def answers(engine, pairs):
        outs = await asyncio.gather(*[collect(engine.stream(msgs(p), model=m)) for p, m in pairs])
        await engine.close()
        return outs, list(engine.batches)

    pairs = [(PROMPTS[0], "base"), (PROMPTS[1], "shop-a"), (PROMPTS[2], "shop-a"), (PROMPTS[3], "base")]
    mixed, batches = asyncio.run(answers(
        LocalEngine(tiny_model(tok), tok, adapters={"shop-a": str(a)}, max_new_tokens=8, batch_wait_ms=50), pairs))
    alone = [asyncio.run(answers(LocalEngine(tiny_model(tok), tok, adapters={"shop-a": str(a)}, max_new_tokens=8,
                                             max_batch_size=1), [pair]))[0][0] for pair in pairs]
    assert max(batches) == 4
    assert mixed == alone
    assert mixed[1] != _generate_alone(tiny_model(tok), tok, PROMPTS[1], 8)  # the adapter rows really used it


def test_streaming_yields_pieces_and_respects_budget(tiny):
    model, tok = tiny

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=20)
        pieces = [p async for p in engine.stream(msgs("你好"), max_new_tokens=5)]
        await engine.close()
        return pieces

    pieces = asyncio.run(run())
    assert 1 <= len(pieces) <= 5 and len(tok("".join(pieces), add_special_tokens=False)["input_ids"]) <= 6


def _make_adapter(tok, path, seed):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(tiny_model(tok), LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False))
    peft_model.save_pretrained(path)
    return path


def test_adapters_selected_by_model_name_and_hot_swapped(tiny, tmp_path):
    _, tok = tiny
    a = _make_adapter(tok, tmp_path / "a", 1)
    b = _make_adapter(tok, tmp_path / "b", 2)

    async def run():
        engine = LocalEngine(tiny_model(tok), tok, base_name="base", adapters={"shop-a": str(a)}, max_new_tokens=8)
        base = await collect(engine.stream(msgs("冲锋衣多少钱")))
        with_a = await collect(engine.stream(msgs("冲锋衣多少钱"), model="shop-a"))
        engine.load_adapter("shop-b", str(b))  # while serving
        with_b = await collect(engine.stream(msgs("冲锋衣多少钱"), model="shop-b"))
        base_again = await collect(engine.stream(msgs("冲锋衣多少钱"), model="base"))
        with pytest.raises(EngineError, match="unknown adapter"):
            await collect(engine.stream(msgs("x"), model="nope"))
        await engine.close()
        refs = {}
        for name, path in (("shop-a", a), ("shop-b", b)):  # a model holding only that adapter
            fresh = LocalEngine(tiny_model(tok), tok, base_name="base", adapters={name: str(path)}, max_new_tokens=8)
            refs[name] = await collect(fresh.stream(msgs("冲锋衣多少钱"), model=name))
            await fresh.close()
        return engine.models(), base, with_a, with_b, base_again, refs

    models, base, with_a, with_b, base_again, refs = asyncio.run(run())
    assert models == ["base", "shop-a", "shop-b"]
    assert base == base_again
    assert with_a == refs["shop-a"] and with_b == refs["shop-b"]
    assert with_a != base


def test_a_lone_adapter_is_merged_once_the_base_is_retired(tiny, tmp_path):
    """With the base model retired (a trained run serves all traffic) the one adapter is merged into the weights:
    greedy answers are those of the unmerged adapter, no step passes per-row adapters, the base is refused; loading
    a second adapter takes the first back out so both are served side by side."""
    import torch
    from peft import PeftModel

    _, tok = tiny
    a, b = _make_adapter(tok, tmp_path / "a", 1), _make_adapter(tok, tmp_path / "b", 2)
    questions = ["冲锋衣多少钱", "订单到哪了", "有XL码吗"]

    async def answers(engine, model):
        return [await collect(engine.stream(msgs(q), model=model)) for q in questions]

    async def run():
        unmerged = LocalEngine(tiny_model(tok), tok, base_name="base", adapters={"shop-a": str(a)}, max_new_tokens=8)
        want = await answers(unmerged, "shop-a")
        await unmerged.close()
        engine = LocalEngine(tiny_model(tok), tok, base_name="base", adapters={"shop-a": str(a)}, max_new_tokens=8)
        calls = []
        forward = engine.model.forward
        engine.model.forward = lambda *args, **kw: calls.append("adapter_names" in kw) or forward(*args, **kw)
        engine.retire_base()
        merged = (engine.merged, engine.models(), await answers(engine, "shop-a"), any(calls))
        with pytest.raises(EngineError, match="not served"):
            await collect(engine.stream(msgs("x"), model="base"))
        engine.load_adapter("shop-b", str(b))
        both = (engine.merged, engine.models(), await answers(engine, "shop-a"))
        await engine.close()
        return want, merged, both, engine

    want, merged, both, engine = asyncio.run(run())
    assert merged[0] == "shop-a" and merged[1] == ["shop-a"] and merged[2] == want and not merged[3]
    assert both[0] is None and both[1] == ["shop-a", "shop-b"] and both[2] == want
    assert isinstance(engine.model, PeftModel)
    layer = engine.model.base_model.model.model.layers[0].self_attn.q_proj
    assert not layer.merged and torch.is_tensor(layer.lora_A["shop-a"].weight)


def test_the_base_model_answers_no_one_even_before_an_adapter_arrives(tiny, tmp_path):
    """``kefu serve --registry`` before any promotion: the engine holds only the untuned base, which must not answer
    customers. Turns are answered without a model (the light path, past replies, handoff) and the engine is never
    asked; the promoted adapter, once loaded, serves everyone, merged into the weights."""
    from kefu.serve.pipeline import ChatService

    _, tok = tiny
    a = _make_adapter(tok, tmp_path / "a", 1)
    engine = LocalEngine(tiny_model(tok), tok, base_name="base", max_new_tokens=4)
    asked = []
    original = engine.stream
    engine.stream = lambda *args, **kw: asked.append(kw) or original(*args, **kw)
    service = ChatService(engine, config=ServeConfig(), base_model="base")
    assert engine.models() == [] and service.tuned_models() == [] and service.models() == ["base"]
    reply = asyncio.run(service.answer([{"role": "user", "content": "帮我推荐一款冲锋衣"}]))
    assert reply.path == "handoff" and reply.reason == "no trained model" and not asked
    engine.load_adapter("shop", str(a))
    assert service.models() == ["shop"] and engine.merged == "shop"
    reply = asyncio.run(service.answer([{"role": "user", "content": "帮我推荐一款冲锋衣"}]))
    assert reply.path in ("full", "handoff") and asked and asked[0]["model"] == "shop"
    asyncio.run(engine.close())


def test_int8_dynamic_quantisation_generates(tiny):
    _, tok = tiny

    async def run():
        engine = LocalEngine(tiny_model(tok), tok, max_new_tokens=4, quantize="int8")
        out = await collect(engine.stream(msgs("你好")))
        await engine.close()
        return engine, out

    engine, out = asyncio.run(run())
    import torch

    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in engine.model.modules())
    assert out


def test_int8_weight_quantisation_serves_base_and_hot_swapped_adapters(tiny, tmp_path):
    from kefu.train.quant import Int8Linear  # deferred: heavy (torch)

    _, tok = tiny
    a = _make_adapter(tok, tmp_path / "a", 1)

    async def run():
        engine = LocalEngine(tiny_model(tok), tok, base_name="base", max_new_tokens=8, quantize="int8-weight")
        base = await asyncio.gather(*[collect(engine.stream(msgs(p))) for p in PROMPTS])
        engine.load_adapter("shop-a", str(a))  # an adapter arriving after quantisation wraps the int8 layers
        with_a = await collect(engine.stream(msgs(PROMPTS[0]), model="shop-a"))
        base_again = await collect(engine.stream(msgs(PROMPTS[0])))
        await engine.close()
        return engine, base, with_a, base_again

    engine, base, with_a, base_again = asyncio.run(run())
    assert sum(isinstance(m, Int8Linear) for m in engine.model.modules()) == 2 * 7 + 1  # + the output projection
    assert all(base) and with_a and with_a != base[0] and base_again == base[0]


def test_unknown_quantisation_is_refused(tiny):
    with pytest.raises(ValueError, match="int8-weight"):
        LocalEngine(tiny_model(tiny[1]), tiny[1], quantize="int4")


def test_trimmed_vocabulary_batches_and_writes_only_kept_tokens(tiny, tmp_path):
    from kefu.train.vocab import corpus_vocab  # deferred: heavy (torch)

    _, tok = tiny
    trim = corpus_vocab(tok, ["亲，有黑色的。", "好的，谢谢"])
    trim.save(tmp_path)
    trim = load_trim(str(tmp_path))
    keep = set(trim.keep_ids)
    full_ids = set(tok(list(PROMPTS), add_special_tokens=False)["input_ids"][0])
    assert not full_ids <= keep  # the prompts hold characters outside the trim: they are still read

    async def run(batch_size):
        engine = LocalEngine(tiny_model(tok), tok, max_new_tokens=8, max_batch_size=batch_size, batch_wait_ms=50,
                             trim=trim)
        outs = await asyncio.gather(*[collect(engine.stream(msgs(p))) for p in PROMPTS])
        await engine.close()
        return engine, outs

    engine, single = asyncio.run(run(1))
    _, batched = asyncio.run(run(8))
    assert engine.trimmed_vocab == len(keep)
    assert batched == single and any(single)
    for text in single:
        assert set(tok(text, add_special_tokens=False)["input_ids"]) <= keep, text


def test_generation_failure_raises_engine_error(tiny):
    model, tok = tiny

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=4)

        class Broken:
            generation_config = model.generation_config

            def __call__(self, *a, **k):
                raise RuntimeError("CUDA out of memory (simulated)")

        engine.model = Broken()
        with pytest.raises(EngineError, match="simulated"):
            await collect(engine.stream(msgs("你好")))
        await engine.close()

    asyncio.run(run())


def _sse(*pieces):
    body = "".join(f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n" for p in pieces)
    return body + "data: [DONE]\n\n"


def test_remote_engine_streams_and_retries():
    calls = []

    def handler(request: httpx.Request):
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            return httpx.Response(503, text="warming up")
        return httpx.Response(200, text=_sse("您好", "，在的"), headers={"content-type": "text/event-stream"})

    async def run():
        engine = RemoteEngine("http://vllm.invalid", base_name="base", adapters=["shop"], retries=2,
                              transport=httpx.MockTransport(handler))
        out = await collect(engine.stream(msgs("在吗"), model="shop"))
        await engine.close()
        return out

    assert asyncio.run(run()) == "您好，在的"
    assert len(calls) == 2 and calls[1]["model"] == "shop" and calls[1]["stream"] is True


def test_remote_engine_gives_up_with_engine_error():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    async def run():
        engine = RemoteEngine("http://vllm.invalid", retries=1, transport=httpx.MockTransport(handler))
        try:
            with pytest.raises(EngineError, match="2 attempts"):
                await collect(engine.stream(msgs("在吗")))
        finally:
            await engine.close()

    asyncio.run(run())


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_drafts_that_are_all_right_or_all_wrong_leave_the_answer_unchanged(arch):
    """Verification with an oracle (every draft token is the model's own next token: multi-token acceptance, new
    cache entries at their true positions) and with garbage drafts (every draft rejected and its cache dropped)."""
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok), seed=5).eval()
    texts, budget = [CUSTOMER[2], CUSTOMER[3] * 2, CUSTOMER[7]], 14
    want = [_generate_alone(model, tok, t, budget) for t in texts]
    oracle = {}
    for text in texts:
        ids = tok(render(tok, msgs(text)), add_special_tokens=prompt_add_special_tokens(tok))["input_ids"]
        oracle[tuple(ids)] = _generate_ids(model, tok, text, budget, stop_at_eos=False)

    for kind in ("oracle", "garbage"):
        engine = LocalEngine(model, tok, max_new_tokens=budget, max_batch_size=8, batch_wait_ms=50, draft_tokens=4)

        def drafts(active, kind=kind):
            out = []
            for row in active:
                nxt = oracle[tuple(row.prompt)][len(row.ids):len(row.ids) + 3]
                out.append(nxt if kind == "oracle" else [(t + 7) % len(tok) for t in nxt])
            return out

        engine._drafts = drafts

        async def run(engine=engine):
            outs = await asyncio.gather(*[collect(engine.stream(msgs(t))) for t in texts])
            await engine.close()
            return outs

        assert asyncio.run(run()) == want, kind
        assert engine.drafted > 0
        if kind == "oracle":
            assert engine.accepted == engine.drafted  # multi-token steps really happened
        else:
            assert engine.accepted == 0


def test_lookup_draft_copies_what_followed_the_latest_match():
    assert lookup_draft([5, 6, 7, 8, 9, 1, 6, 7], 3) == [8, 9, 1]  # 2-gram (6, 7) seen before: its continuation
    assert lookup_draft([1, 2, 3, 1, 2, 4, 1, 2], 2) == [4, 1]  # the latest occurrence wins
    assert lookup_draft([1, 2, 3, 4], 3) == []  # nothing repeats
    assert lookup_draft([1, 2, 1, 2], 0) == []


def test_close_ends_running_and_queued_requests(tiny):
    """No client waits forever on a closed engine: the one decoding and those queued all end with EngineError."""
    model, tok = tiny

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=64, max_batch_size=1, batch_wait_ms=0, draft_tokens=0)
        tasks = [asyncio.create_task(collect(engine.stream(msgs(p), max_new_tokens=64))) for p in PROMPTS * 2]
        while not engine.ttfts and not any(t.done() for t in tasks):
            await asyncio.sleep(0.001)
        await engine.close()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    results = asyncio.run(run())
    assert all(isinstance(r, (str, EngineError)) for r in results), results
    assert sum(isinstance(r, EngineError) for r in results) >= len(PROMPTS)  # at least the queued half


def test_going_idle_hands_freed_memory_back(tiny):
    """After the last row finishes the engine trims the heap (glibc), so RSS follows use instead of the peak."""
    import sys

    model, tok = tiny

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=4)
        await collect(engine.stream(msgs(PROMPTS[0])))
        await engine.close()
        return engine.heap_trims

    trims = asyncio.run(run())
    if sys.platform.startswith("linux"):
        assert release_freed_memory() == 1 and trims >= 1


def test_a_sampled_row_shares_wide_draft_steps_with_greedy_rows():
    """A sampled request (no drafts: one token per step) decoding next to drafted greedy ones leaves their answers
    exactly ``generate``'s, and its own seeded sample repeats."""
    import torch

    tok = make_tokenizer()
    model = make_model("gemma3", vocab_size=len(tok), seed=3).eval()
    texts = [CUSTOMER[1], CUSTOMER[5] * 3, CUSTOMER[0]]
    want = [_generate_alone(model, tok, t, 16) for t in texts]

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=16, max_batch_size=8, batch_wait_ms=50, draft_tokens=4)
        outs = await asyncio.gather(*[collect(engine.stream(msgs(t))) for t in texts],
                                    collect(engine.stream(msgs(CUSTOMER[2]), temperature=0.8)))
        await engine.close()
        return outs, engine

    torch.manual_seed(0)
    (*greedy, sampled), engine = asyncio.run(run())
    assert greedy == want and engine.drafted > 0
    torch.manual_seed(0)
    assert asyncio.run(run())[0][-1] == sampled


# -- decoding that ends: repetition control, stop strings, budgets, finish_reason ------------------------------------

LOOPING = "冲锋衣多少钱"  # the tiny model's greedy answer to it loops ("理reh了l1理reh了l1...") without repetition control


def _repeats(ids, n):
    """Whether some n-gram occurs twice in ``ids``."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


async def _answer(engine, text, **kwargs):
    """(text, pieces, finish_reason) of one streamed answer."""
    stream = engine.stream(msgs(text), **kwargs)
    pieces = [piece async for piece in stream]
    return "".join(pieces), pieces, stream.finish_reason


def test_no_repeat_ngrams_end_a_loop(tiny):
    model, tok = tiny
    looping = _generate_ids(model, tok, LOOPING, 30, penalty=1.0, ngram=0)
    assert any(looping[-p:] == looping[-2 * p:-p] == looping[-3 * p:-2 * p] for p in range(1, 11))  # a real loop

    async def run(draft_tokens):
        engine = LocalEngine(model, tok, max_new_tokens=30, draft_tokens=draft_tokens)
        off = await _answer(engine, LOOPING, repetition_penalty=1.0, no_repeat_ngram_size=0)
        ban = await _answer(engine, LOOPING, repetition_penalty=1.0, no_repeat_ngram_size=4)
        default = await _answer(engine, LOOPING)
        await engine.close()
        return off, ban, default

    for draft_tokens in (0, 4):
        off, ban, default = asyncio.run(run(draft_tokens))
        assert off[0] == tok.decode(looping, skip_special_tokens=True) and off[2] == "length"
        ban_ids = _generate_ids(model, tok, LOOPING, 30, penalty=1.0, ngram=4)
        assert not _repeats(ban_ids, 4) and ban[0] == tok.decode(ban_ids, skip_special_tokens=True)
        assert default[0] == _generate_alone(model, tok, LOOPING, 30)  # ServeConfig's defaults: 1.1 and 4
        assert default[0] != off[0]


def test_repetition_control_is_per_row_in_a_batch(tiny):
    """Two requests with different settings share decode steps (with drafts); each answer is transformers' for its
    own settings, and a sampled row obeys its n-gram ban too."""
    import torch

    model, tok = tiny
    settings = [(LOOPING, 1.0, 0), (PROMPTS[1], 1.3, 3), (PROMPTS[0], 1.1, 2)]
    want = [_generate_alone(model, tok, text, 24, penalty, ngram) for text, penalty, ngram in settings]
    assert len(set(want)) == 3

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=24, batch_wait_ms=50, draft_tokens=4)
        outs = await asyncio.gather(
            *[collect(engine.stream(msgs(t), repetition_penalty=p, no_repeat_ngram_size=n)) for t, p, n in settings],
            collect(engine.stream(msgs(PROMPTS[2]), temperature=1.0, no_repeat_ngram_size=1, max_new_tokens=30)))
        await engine.close()
        return outs, list(engine.batches), engine

    torch.manual_seed(0)
    (*greedy, sampled), batches, engine = asyncio.run(run())
    assert greedy == want
    assert max(batches) == 4 and engine.drafted > 0
    assert len(sampled) > 5 and len(set(sampled)) == len(sampled)  # char tokenizer: no token twice


def test_control_repetition_matches_transformers_at_every_draft_position():
    """``control_repetition`` on a [rows, width, vocab] step equals transformers' processors on each reply+draft."""
    import random

    import torch
    from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    rng = random.Random(0)
    vocab = 12
    rows = [([rng.randrange(6) for _ in range(rng.randrange(0, 14))], [rng.randrange(6) for _ in range(k)], p, n)
            for k, p, n in [(0, 1.2, 3), (3, 1.0, 2), (4, 1.5, 0), (2, 1.0, 1), (4, 1.3, 4)]]
    width = 5
    logits = torch.randn(len(rows), width, vocab)
    histories = []
    for reply, _, penalty, n in rows:
        history = History([], penalty, n)
        for token in reply:
            history.ids.append(token)
            history.note()
        histories.append(history)
    got = control_repetition(logits.clone(), histories, [draft for _, draft, _, _ in rows])
    for r, (reply, draft, penalty, n) in enumerate(rows):
        for j in range(width):
            if j > len(draft):
                assert torch.equal(got[r, j], logits[r, j])  # padding positions are left alone
                continue
            ids = torch.tensor([reply + draft[:j]], dtype=torch.long)
            want = logits[r, j][None].clone()
            if penalty != 1.0 and ids.shape[1]:
                want = RepetitionPenaltyLogitsProcessor(penalty)(ids, want)
            if n:
                want = NoRepeatNGramLogitsProcessor(n)(ids, want)
            assert torch.allclose(got[r, j], want[0]), (r, j)


def test_stop_strings_end_the_stream_and_are_never_sent(tiny):
    model, tok = tiny
    full = _generate_alone(model, tok, LOOPING, 24)
    stop = full[7:10]  # three characters in the middle, sent one token at a time: two held back before the match
    want = full[:full.index(stop)]

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=24)
        got = await _answer(engine, LOOPING, stop=[stop])
        await engine.close()
        return got

    text, pieces, reason = asyncio.run(run())
    assert text == want and reason == "stop"
    assert all(stop not in p for p in pieces) and len(pieces) > 1


def test_stop_text_holds_back_what_could_begin_a_turn_stop():
    stops = StopText(TURN_STOPS)
    assert stops.feed("好的亲") == "好的亲"
    assert stops.feed("，还有什么需要吗？\n") == "，还有什么需要吗？"  # "\n" may begin "\n用户："
    assert stops.feed("用") == ""
    assert stops.feed("户：那我再") == "" and stops.stopped
    assert stops.feed("想想") == "" and stops.flush() == ""
    other = StopText(TURN_STOPS)
    assert other.feed("第一行\n") == "第一行" and other.feed("第二行<start_of") == "\n第二行"
    assert other.flush() == "<start_of" and not other.stopped  # the end: what was held is sent
    assert StopText(TURN_STOPS).feed("客服：您好") == "客服：您好"  # a leading role label is not a next turn
    assert StopText(TURN_STOPS).feed("您好\n客服：您好") == "您好"


def test_finish_reason_is_length_at_the_budget_and_stop_on_eos(tiny):
    model, tok = tiny
    ids = _generate_ids(model, tok, PROMPTS[1], 24)
    k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=24)
        at_budget = await _answer(engine, PROMPTS[1], max_new_tokens=5)
        engine.eos_ids = engine.eos_ids | {ids[k]}  # the model's k-th token now ends the answer
        at_eos = await _answer(engine, PROMPTS[1])
        await engine.close()
        return at_budget, at_eos

    (budget_text, _, budget_reason), (eos_text, _, eos_reason) = asyncio.run(run())
    assert budget_reason == "length" and budget_text == tok.decode(ids[:5], skip_special_tokens=True)
    assert eos_reason == "stop" and eos_text == tok.decode(ids[:k], skip_special_tokens=True)


def test_streams_keep_yielding_text_and_finish_reason_reads_fakes_too(tiny):
    model, tok = tiny

    async def fake():
        yield "x"

    async def run():
        engine = LocalEngine(model, tok, max_new_tokens=3)
        stream = engine.stream(msgs(PROMPTS[0]))
        assert finish_reason(stream) is None  # not before the end
        pieces = [p async for p in stream]
        await engine.close()
        plain = fake()
        return pieces, finish_reason(stream), [p async for p in plain], finish_reason(plain)

    pieces, reason, fake_pieces, fake_reason = asyncio.run(run())
    assert all(isinstance(p, str) for p in pieces) and reason == "length"
    assert fake_pieces == ["x"] and fake_reason is None


def test_token_budget_per_intent():
    config = ServeConfig()
    assert token_budget(config, "greeting", None) == 32
    assert token_budget(config, "price_inquiry", None) == token_budget(config, "logistics_tracking", 500) == 64
    assert token_budget(config, "complaint", None) == token_budget(config, None, None) == config.max_new_tokens
    assert token_budget(config, "order_status", 20) == 20  # the client asked for less
    small = ServeConfig(max_new_tokens=16, max_new_tokens_by_intent={"greeting": 8, "other": 300})
    assert token_budget(small, "greeting", None) == 8 and token_budget(small, "other", None) == 16  # never above
    with pytest.raises(ValueError):
        ServeConfig(max_new_tokens_by_intent={"greeting": 0})


def test_remote_engine_cuts_stop_strings_sends_extras_only_when_asked_and_reports_finish_reason():
    bodies = []

    def handler(request: httpx.Request):
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:  # the model writes the customer's next line
            body = _sse("好的亲，", "马上发货\n用", "户：好的谢谢")
        else:
            body = (f"data: {json.dumps({'choices': [{'delta': {'content': '亲'}, 'finish_reason': None}]})}\n\n"
                    f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'length'}]})}\n\n"
                    "data: [DONE]\n\n")
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    async def run(extras):
        engine = RemoteEngine("http://vllm.invalid", transport=httpx.MockTransport(handler), sampling_extras=extras,
                              repetition_penalty=1.1)
        first = await _answer(engine, "发货了吗", stop=["。"], no_repeat_ngram_size=3)
        second = await _answer(engine, "发货了吗", repetition_penalty=1.3)
        await engine.close()
        return first, second

    (text, _, reason), (text2, _, reason2) = asyncio.run(run(False))
    assert (text, reason) == ("好的亲，马上发货", "stop") and (text2, reason2) == ("亲", "length")
    assert "repetition_penalty" not in bodies[0] and "no_repeat_ngram_size" not in bodies[0]
    bodies.clear()
    asyncio.run(run(True))
    assert bodies[0]["repetition_penalty"] == 1.1 and bodies[1]["repetition_penalty"] == 1.3
    assert "no_repeat_ngram_size" not in bodies[0]  # no OpenAI-compatible server takes it
