"""Experience metrics: diversity, repetition, length, perplexity, and the optional judge against a fake endpoint."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from kefu.eval.experience import experience_metrics, judge_satisfaction, perplexity
from kefu.types import KefuError


def test_distinct_repetition_length():
    m, rows = experience_metrics(["亲亲亲亲亲亲", "好的", ""], [["亲，在的"], ["好的呢", "好"], ["嗯"]])
    # characters: 亲x6, 好, 的 -> 3 unique of 8; bigrams: 亲亲x5 + 好的 -> 2 unique of 6
    assert m["distinct_1"] == pytest.approx(3 / 8) and m["distinct_2"] == pytest.approx(2 / 6)
    # 亲亲亲亲亲亲 has three 4-grams, all 亲亲亲亲: 2 of 3 repeat
    assert rows[0]["repeat_4gram"] == pytest.approx(2 / 3) and rows[1]["repeat_4gram"] == 0.0
    assert m["repeat_4gram_rate"] == pytest.approx((2 / 3) / 3)
    assert m["len_mean"] == pytest.approx(8 / 3) and m["len_p50"] == 2 and m["empty_rate"] == pytest.approx(1 / 3)
    assert m["ref_len_mean"] == pytest.approx((4 + 2 + 1) / 3)


def _fake_judge(scores: list[str], seen: list[dict]):
    answers = iter(scores)

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"body": body, "auth": request.headers.get("authorization"), "url": str(request.url)})
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": next(answers)}}]})

    return httpx.MockTransport(handler)


def test_judge_through_openai_compatible_endpoint():
    seen: list[dict] = []
    transport = _fake_judge(['{"score": 5, "reason": "好"}', "给 3 分", "无法评分"], seen)
    m, scores = judge_satisfaction("http://judge.local/v1", ["问：发货？"] * 3, ["48小时内发货", "嗯", "?"],
                                   model="qwen-judge", api_key="k", concurrency=1, transport=transport)
    assert scores == [5, 3, None]
    assert m["judge_satisfaction"] == 4 and m["judge_n"] == 2 and m["judge_unparsed"] == 1
    assert seen[0]["url"] == "http://judge.local/v1/chat/completions" and seen[0]["auth"] == "Bearer k"
    assert seen[0]["body"]["model"] == "qwen-judge" and "1 到 5" in seen[0]["body"]["messages"][0]["content"]


def test_judge_http_error_is_clear():
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text="overloaded"))
    with pytest.raises(KefuError, match="HTTP 503"):
        judge_satisfaction("http://judge.local/v1", ["c"], ["p"], transport=transport)


def test_perplexity_tiny_model():
    from _tiny import make_model, make_tokenizer

    tok = make_tokenizer()
    model = make_model(tok)
    prompts = [tok("你好", add_special_tokens=True)["input_ids"], tok("发货", add_special_tokens=True)["input_ids"]]
    total, per = perplexity(model, tok, prompts + [prompts[0]], ["亲，在的", "48小时内发货", ""], batch_size=2)
    assert per[2] is None and all(p is not None and p > 1 for p in per[:2])
    # a random model over V tokens sits near perplexity V
    assert 0.3 * len(tok) < total < 3 * len(tok)
    # the corpus value pools tokens: it lies between the two per-sample values
    assert min(per[:2]) <= total <= max(per[:2])
    assert math.isfinite(total)
