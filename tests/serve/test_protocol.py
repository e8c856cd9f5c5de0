"""The OpenAI contract of /v1/chat/completions (kefu.serve.protocol): real usage, finish_reason "length", the usage
chunk of a stream, ``n`` and ``stop``, and a 400 naming every parameter kefu does not implement or does not know."""

import asyncio
import json

import httpx
import pytest

from kefu.serve.protocol import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from serve_support import API_KEY, make_service

USER = [{"role": "user", "content": "SL-10001多少钱"}]  # a light-path answer: 山岚冲锋衣的价格是¥399。
MODEL_TURN = [{"role": "user", "content": "帮我推荐一款冲锋衣"}]  # the tiny model answers (8-token budget)


def post(client, **body):
    return client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER, **body})


def events(response) -> list:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# ------------------------------------------------------------------------------------- unsupported / unknown
@pytest.mark.parametrize("param,value", [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]), ("tool_choice", "auto"),
    ("response_format", {"type": "json_object"}), ("logprobs", True), ("top_logprobs", 2), ("seed", 7),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logit_bias", {"50256": -100}), ("top_p", 0.9),
    ("functions", [{"name": "f"}]), ("function_call", "auto"), ("store", True), ("modalities", ["audio"]),
])
def test_an_unsupported_parameter_is_a_400_naming_it(client, param, value):
    r = post(client, **{param: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "unsupported_parameter", error
    assert error["message"].startswith(f"{param} is not supported by kefu serve; "), error


def test_the_off_values_of_unsupported_parameters_are_accepted(client):
    r = post(client, tools=[], tool_choice="none", response_format={"type": "text"}, logprobs=False, top_logprobs=0,
             seed=None, presence_penalty=0, frequency_penalty=0.0, logit_bias={}, top_p=1, store=False)
    assert r.status_code == 200, r.text


def test_an_unknown_parameter_is_a_400_as_openai_words_it(client):
    r = post(client, best_of=2)
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "Unrecognized request argument supplied: best_of",
                                 "type": "invalid_request_error", "param": "best_of", "code": "unknown_parameter"}
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [
        {"role": "user", "content": "hi", "colour": "red"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.colour"


def test_an_echoed_assistant_message_is_accepted(client):
    history = [{"role": "user", "content": "你好"},
               {"role": "assistant", "content": "您好", "refusal": None, "tool_calls": None, "annotations": [],
                "function_call": None, "audio": None},
               {"role": "developer", "content": "简短回答"},
               {"role": "user", "content": [{"type": "text", "text": "SL-10001多少钱"}]}]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": history})
    assert r.status_code == 200, r.text
    assert ChatCompletionRequest.model_validate({"model": "tiny", "messages": history}).texts()[2] == {
        "role": "system", "content": "简短回答"}


def test_image_parts_and_unknown_roles_name_the_message(client):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
    assert "only text parts" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "tool", "content": "x"}]})
    assert r.json()["error"]["code"] == "invalid_role" and r.json()["error"]["param"] == "messages.0.role"


@pytest.mark.parametrize("body,param,fragment", [
    ({"n": 5}, "n", "less than or equal to 4"), ({"n": 0}, "n", "greater than or equal to 1"),
    ({"stop": list("abcde")}, "stop", "at most 4 items"), ({"stop": 3}, "stop", "valid"),
    ({"stream_options": {"include_usage": True, "x": 1}}, "stream_options.x", "Unrecognized"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages.0.content.0.text",
     "valid string")])
def test_bounds_and_types_name_the_parameter(client, body, param, fragment):
    r = post(client, **body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert fragment in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------ usage, finish
def test_usage_counts_the_light_path_with_the_served_tokenizer(client, app):
    r = post(client)
    body = ChatCompletionResponse.model_validate(r.json())
    text = body.choices[0].message.content
    service = app.state.service
    assert text == "山岚冲锋衣的价格是¥399。" and body.choices[0].finish_reason == "stop"
    assert body.usage.prompt_tokens == service.count_tokens("SL-10001多少钱") > 0
    assert body.usage.completion_tokens == service.count_tokens(text) > 0
    assert body.usage.total_tokens == body.usage.prompt_tokens + body.usage.completion_tokens


def test_a_capped_model_answer_says_length_with_the_engine_counts(client):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MODEL_TURN})
    body = ChatCompletionResponse.model_validate(r.json())
    meta = body.kefu
    assert meta["path"] == "full" and body.choices[0].finish_reason == meta["finish_reason"] == "length"
    assert body.usage.prompt_tokens == meta["prompt_tokens"] and body.usage.completion_tokens == meta[
        "completion_tokens"] == 8


def test_a_stream_ends_with_length_and_the_usage_chunk(client):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MODEL_TURN, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    chunks = [ChatCompletionChunk.model_validate(e) for e in events(r)]
    assert all(c.usage is None for c in chunks[:-1]) and all("usage" in e for e in events(r))
    assert chunks[-2].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + 8 and len({c.id for c in chunks}) == 1
    plain = client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER, "stream": True})
    assert all("usage" not in e for e in events(plain))  # without include_usage: no usage field at all


# ------------------------------------------------------------------------------------------------- n, stop
def test_n_greedy_replicates_one_answer(client, app):
    r = post(client, n=3)
    body = ChatCompletionResponse.model_validate(r.json())
    assert [c.index for c in body.choices] == [0, 1, 2]
    assert len({c.message.content for c in body.choices}) == 1
    one = app.state.service.count_tokens(body.choices[0].message.content)
    assert body.usage.completion_tokens == 3 * one
    streamed = events(post(client, n=2, stream=True))
    texts = {i: "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed
                        if e["choices"] and e["choices"][0]["index"] == i) for i in (0, 1)}
    assert texts[0] == texts[1] == body.choices[0].message.content


def test_n_sampled_answers_are_generated_each_and_recorded_once(client, app):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MODEL_TURN, "n": 3,
                                                  "temperature": 1.0})
    body = ChatCompletionResponse.model_validate(r.json())
    assert [c.index for c in body.choices] == [0, 1, 2] and all(c.message.content for c in body.choices)
    service = app.state.service
    # the server made the session (issue 19: client-named sessions are gone); all three samples are in it once
    session = next(s for s in service.sessions._data.values() if s.id == body.kefu["session_id"])
    assert [t["role"] for t in session.turns] == ["user", "assistant"] and session.failures == 0
    assert len(service.cache) == 1  # the first answer only: a sample is not cached
    logged = [e for e in service.request_log if e["path"] == "full"]
    assert len(logged) == 3  # three generations


def test_stop_cuts_the_light_path_answer_plain_and_streamed(client):
    r = post(client, stop=["¥", "不会出现"])
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "山岚冲锋衣的价格是" and choice["finish_reason"] == "stop"
    streamed = events(post(client, stop="¥", stream=True))
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed) == "山岚冲锋衣的价格是"
    again = post(client).json()
    assert again["choices"][0]["message"]["content"] == "山岚冲锋衣的价格是¥399。"  # nothing cut was cached


class RecordingEngine:
    name = "recording"

    def __init__(self):
        self.calls = []

    def models(self):
        return ["tiny"]

    async def stream(self, messages, **kwargs):
        self.calls.append(kwargs)
        for piece in ("好的。", "请稍等。"):
            yield piece

    async def close(self):
        pass


def test_stop_is_passed_to_the_engine_and_a_stopped_answer_is_not_cached(tiny):
    engine = RecordingEngine()
    service = make_service(tiny, engine=engine)
    reply = asyncio.run(service.answer(MODEL_TURN, stop=["请"]))
    assert engine.calls[-1]["stop"] == ["请"] and reply.path == "full"
    assert len(service.cache) == 0
    asyncio.run(service.answer([{"role": "user", "content": "有没有防水的帐篷"}]))
    assert "stop" not in engine.calls[-1] and len(service.cache) == 1


def test_the_openai_client_reads_n_stop_and_the_usage_chunk(app):
    openai = pytest.importorskip("openai")

    async def run():
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu")
        client = openai.AsyncOpenAI(base_url="http://kefu/v1", api_key=API_KEY, http_client=http, max_retries=0)
        plain = await client.chat.completions.create(model="tiny", messages=USER, n=2, stop=["¥"])
        stream = await client.chat.completions.create(model="tiny", messages=USER, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        with pytest.raises(openai.BadRequestError, match="tools is not supported"):
            await client.chat.completions.create(model="tiny", messages=USER, tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        await http.aclose()
        return plain, chunks

    plain, chunks = asyncio.run(run())
    assert [c.message.content for c in plain.choices] == ["山岚冲锋衣的价格是"] * 2
    assert plain.usage.completion_tokens > 0 and plain.choices[1].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []
