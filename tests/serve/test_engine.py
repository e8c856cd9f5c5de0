"""Engines: continuously batched local generation (same output as one at a time), streaming, LoRA adapters hot-swapped,
INT8 quantisation, and the remote OpenAI-compatible engine with retries."""

import asyncio
import json

import httpx
import pytest

from kefu.heap import release_freed_memory
from kefu.serve.build import load_trim
from kefu.serve.engine import EngineError, LocalEngine, RemoteEngine, collect, lookup_draft, render
from kefu.testing import CUSTOMER, make_model, make_tokenizer
from kefu.train.template import prompt_add_special_tokens, stop_token_ids
from serve_support import tiny_model

PROMPTS = ["冲锋衣多少钱", "有黑色吗", "订单发货了吗，我等了好久", "你好"]


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


def _generate_alone(model, tok, text, max_new):
    """What ``generate`` answers for one prompt on its own (greedy), as text up to the end-of-turn token."""
    import torch

    enc = tok(render(tok, msgs(text)), return_tensors="pt", add_special_tokens=prompt_add_special_tokens(tok))
    stops = set(stop_token_ids(tok)) | {tok.eos_token_id}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=sorted(stops))
    ids = out[0, enc["input_ids"].shape[1]:].tolist()
    ids = ids[:next((i for i, t in enumerate(ids) if t in stops), len(ids))]
    return tok.decode(ids, skip_special_tokens=True)


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
    want = [_generate_alone(model, tok, t, n) for t, n in zip(texts, budgets)]

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
    import torch

    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok), seed=5).eval()
    texts, budget = [CUSTOMER[2], CUSTOMER[3] * 2, CUSTOMER[7]], 14
    want = [_generate_alone(model, tok, t, budget) for t in texts]
    oracle = {}
    for text in texts:
        ids = tok(render(tok, msgs(text)), add_special_tokens=prompt_add_special_tokens(tok))["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=budget, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        oracle[tuple(ids)] = out[0, len(ids):].tolist()

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
