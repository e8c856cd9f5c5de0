"""Generation: batched local generation keeps input order; the endpoint client keeps order under concurrency."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random

import httpx
import pytest
import torch

from kefu.eval.generate import (GenResult, decoding_settings, encode, fit_prompt, generate_replies,
                                generate_via_endpoint, reply_perplexity, token_batches)
from kefu.types import KefuError


@pytest.fixture(scope="module")
def tiny():
    from _tiny import make_model, make_tokenizer

    tok = make_tokenizer()
    return make_model(tok), tok


def test_batched_generation_preserves_order(tiny):
    model, tok = tiny
    # prompts of very different lengths, so sorting by length really reorders them
    words = ["你好", "发货", "退", "冲锋衣", "颜色", "谢谢", "满减", "订单", "转人工"]
    prompts = [[{"role": "user", "content": w * k}] for k, w in zip([1, 6, 2, 9, 3, 1, 7, 4, 2], words)]
    batched = generate_replies(model, tok, prompts, batch_size=4, max_new_tokens=8)
    single = generate_replies(model, tok, prompts, batch_size=1, max_new_tokens=8)
    assert all(isinstance(r, GenResult) for r in batched)
    assert [r.text for r in batched] == [r.text for r in single]
    assert len({r.text for r in single}) > 1  # the prompts lead to different replies: order is observable
    assert all(r.latency_ms > 0 and 0 < r.new_tokens <= 8 for r in batched)
    assert generate_replies(model, tok, [], batch_size=4) == []


def test_batches_by_rows_and_by_padded_tokens():
    lengths = [100, 900, 50, 1000, 300, 20]
    assert token_batches(lengths, 4) == [[3, 1, 4, 0], [2, 5]]  # longest first, batch_size rows
    # 2 rows of the 1,000-token prompt + 64 new tokens fit 2,200 tokens; a third row would not
    assert token_batches(lengths, 8, max_batch_tokens=2200, max_new_tokens=64) == [[3, 1], [4, 0, 2, 5]]
    assert token_batches([5000, 10], 8, max_batch_tokens=1000) == [[0], [1]]  # too long for the budget: alone
    with pytest.raises(KefuError):
        token_batches([1], 0)


def test_long_prompts_are_cut_at_old_messages(tiny):
    _, tok = tiny
    history = [{"role": r, "content": f"第{k}句你好在吗"} for k in range(30) for r in ("user", "assistant")]
    messages = [{"role": "system", "content": "你是客服"}] + history + [{"role": "user", "content": "什么时候发货"}]
    full = encode(tok, messages)
    ids, kept = fit_prompt(tok, messages, 120)
    assert len(ids) <= 120 < len(full) and ids == encode(tok, kept)
    assert kept[0] == messages[0] and kept[-1] == messages[-1] and kept[1]["role"] == "user"
    assert kept[1:] == messages[len(messages) - len(kept) + 1:]  # the newest messages, in order
    assert fit_prompt(tok, messages, None) == (full, messages) and fit_prompt(tok, messages, 10)[0] == full[-10:]


def _full_logits_perplexity(model, tok, prompts, replies):
    """The reference: one unpadded forward over prompt + reply, every position's logits, reply tokens scored."""
    out = []
    for prompt, reply in zip(prompts, replies):
        ids = tok(reply, add_special_tokens=False)["input_ids"] if reply else []
        if not ids:
            out.append(None)
            continue
        with torch.no_grad():
            logits = model(torch.tensor([list(prompt) + ids])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
        nll = -logp[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
        out.append(math.exp(nll / len(ids)))
    return out


def test_reply_perplexity_equals_the_full_logits_one_and_asks_only_for_reply_logits(tiny):
    model, tok = tiny
    prompts = [encode(tok, [{"role": "user", "content": "你好在吗" * k}]) for k in (1, 6, 2)]
    replies = ["亲，在的", "48小时内发货哦", ""]
    expected = _full_logits_perplexity(model, tok, prompts, replies)
    calls = []
    original = type(model).forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("logits_to_keep"))
        return original(self, *args, **kwargs)

    type(model).forward = spy
    try:
        got = reply_perplexity(model, tok, prompts, replies)
    finally:
        type(model).forward = original
    assert [g[0] for g in got[:2]] == pytest.approx(expected[:2], rel=1e-4) and got[2] == (None, 0.0, 0)
    assert got[1][2] == len(tok(replies[1], add_special_tokens=False)["input_ids"])
    assert calls == [max(g[2] for g in got) + 1]  # logits for the replies' positions only, one batch


def test_decoding_settings_recorded():
    assert decoding_settings(64) == {"max_new_tokens": 64, "do_sample": False}
    assert decoding_settings(32, do_sample=True, temperature=0.7, top_p=0.9) == {
        "max_new_tokens": 32, "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    assert "temperature" not in decoding_settings(32, do_sample=False, temperature=0.7)


def _echo_server(seen: list[dict], delay: bool = True):
    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if delay:
            await asyncio.sleep(random.random() * 0.02)  # answers come back out of order
        text = "回复：" + body["messages"][-1]["content"]
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}],
                                         "usage": {"completion_tokens": len(text)}})

    return httpx.MockTransport(handler)


def test_endpoint_generation_order_and_body():
    seen: list[dict] = []
    prompts = [[{"role": "user", "content": f"问题{i}"}] for i in range(12)]
    results = generate_via_endpoint("http://vllm.local/v1", prompts, model="shop-lora", api_key="sk", concurrency=4,
                                    max_new_tokens=32, transport=_echo_server(seen))
    assert [r.text for r in results] == [f"回复：问题{i}" for i in range(12)]
    assert all(r.latency_ms > 0 and r.new_tokens == len(r.text) for r in results)
    assert seen[0]["model"] == "shop-lora" and seen[0]["max_tokens"] == 32 and seen[0]["temperature"] == 0.0


def test_endpoint_errors_are_clear():
    bad = httpx.MockTransport(lambda request: httpx.Response(500, text="boom"))
    with pytest.raises(KefuError, match="sample 1: HTTP 500"):
        generate_via_endpoint("http://x/v1", [[{"role": "user", "content": "a"}]], transport=bad)

    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(KefuError, match="timed out"):
        generate_via_endpoint("http://x/v1", [[{"role": "user", "content": "a"}]], transport=httpx.MockTransport(slow),
                              timeout_s=0.5)
    junk = httpx.MockTransport(lambda request: httpx.Response(200, json={"nope": 1}))
    with pytest.raises(KefuError, match="not an OpenAI chat completion"):
        generate_via_endpoint("http://x/v1", [[{"role": "user", "content": "a"}]], transport=junk)
