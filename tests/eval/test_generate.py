"""Generation: batched local generation keeps input order; the endpoint client keeps order under concurrency."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from kefu.eval.generate import GenResult, decoding_settings, generate_replies, generate_via_endpoint
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
