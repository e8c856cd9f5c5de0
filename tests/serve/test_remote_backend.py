"""The remote engine against a real OpenAI-compatible backend: a second ``kefu serve`` process (tiny random model, a
LoRA adapters "shop" and "other") stands where vLLM stands on a GPU machine, so requests, streaming, usage and the
choice of adapter by model name cross a real socket and a real server. Like vLLM serving a shop's adapters, the
backend does not let the untuned base model answer."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kefu.serve.engine import EngineError, RemoteEngine, collect
from kefu.serve.gateway import Authenticator
from serve_support import API_KEY, live_uvicorn, make_service, tiny_model, tiny_tokenizer

BACKEND_KEY = "backend-key-0123456789abcdef"
ADAPTERS = ("shop", "other")
QUESTION = [{"role": "user", "content": "这件冲锋衣有黑色L码吗？"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """``kefu serve --model TINY --adapter shop=A --adapter other=B`` in its own process; yields (url, base name)."""
    import torch
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("backend")
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    for seed, name in enumerate(ADAPTERS):
        model = tiny_model(tok)
        torch.manual_seed(100 + seed)  # random B (init_lora_weights=False), another per adapter: the adapter changes
        lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(root / name)  # the answer, so the choice by name is observable
    port = _free_port()
    env = {**os.environ, "KEFU_HOME": str(root / "home"), "KEFU_API_KEY": BACKEND_KEY}
    log = open(root / "backend.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kefu.cli", "serve", "--model", str(root / "tiny"),
                             *[f"--adapter={name}={root / name}" for name in ADAPTERS],
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"backend exited: {(root / 'backend.log').read_text()[-2000:]}"
            assert time.time() < deadline, "backend did not start in 120 s"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url, str(root / "tiny")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _engine(backend, adapters=ADAPTERS, **kwargs) -> RemoteEngine:
    url, base = backend
    return RemoteEngine(url, base_name=base, adapters=list(adapters), api_key=BACKEND_KEY, retries=0,
                        max_new_tokens=8, **kwargs)


def _ask(engine: RemoteEngine, model: str | None):
    async def go():
        try:
            generation = engine.stream(QUESTION, model=model)
            text = await collect(generation)
            return text, generation.finish_reason
        finally:
            await engine.close()
    return asyncio.run(go())


def test_remote_engine_chooses_the_adapter_by_model_name_on_a_real_backend(backend):
    other_text, other_reason = _ask(_engine(backend), "other")
    shop_text, shop_reason = _ask(_engine(backend), "shop")
    assert other_reason in ("stop", "length") and shop_reason in ("stop", "length")
    assert other_text and shop_text
    assert shop_text != other_text  # the backend answered each name with its own adapter
    assert _ask(_engine(backend), "shop")[0] == shop_text  # greedy (or the backend's cache): the same name, answer


def test_names_the_backend_does_not_serve_are_refused(backend):
    with pytest.raises(EngineError, match="HTTP 404.*model_not_found"):  # the name crossed the wire: the backend said
        _ask(_engine(backend, adapters=("shop", "ghost")), "ghost")
    with pytest.raises(EngineError, match="HTTP 404.*model_not_found"):  # nor does it let the base model answer
        _ask(_engine(backend), None)
    retired = _engine(backend)
    retired.retire_base()  # what the gateway does once an adapter is served: the base is not even asked for
    assert retired.models() == list(ADAPTERS)
    with pytest.raises(EngineError, match="base model .* is not served"):
        _ask(retired, None)
    with pytest.raises(EngineError, match="unknown adapter 'other'"):  # never sent: the engine was not given it
        _ask(_engine(backend, adapters=("shop",)), "other")
    with pytest.raises(EngineError, match="HTTP 401"):  # the backend's keys hold
        _ask(RemoteEngine(backend[0], base_name=backend[1], retries=0), None)


def test_kefu_gateway_in_front_of_a_remote_backend(backend, tiny):
    """The chain `kefu serve --engine remote` runs: a customer's request to the gateway, the model's answer from the
    backend process, the adapter chosen by the request's model; the base model is not offered."""
    from kefu.serve.app import create_app

    service = make_service(tiny, engine=_engine(backend), config_overrides={"max_new_tokens": 8,
                                                                            "allow_base_model": False})
    app = create_app(service, auth=Authenticator([API_KEY], use_store=False))
    with live_uvicorn(app) as url:
        models = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
        assert [m["id"] for m in models["data"]] == list(ADAPTERS)
        answers = {}
        for model in ADAPTERS:
            resp = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                              json={"model": model, "messages": [{"role": "user", "content": "冲锋衣怎么洗比较好呢"}]},
                              timeout=60)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model"] == model and body["choices"][0]["message"]["content"]
            assert resp.headers["X-Kefu-Path"] == "full"  # the model answered (not the light path)
            answers[model] = body["choices"][0]["message"]["content"]
    assert answers["shop"] != answers["other"]  # the gateway's model choice reached the backend
    assert service.metrics.engine_errors.labels("remote")._value.get() == 0  # answered by the backend, no fallback
