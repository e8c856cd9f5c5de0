"""kefu serve --ray on a real local Ray instance (2 CPUs, no dashboard).

The ramp: customers arrive and leave on loopback and the replicas follow LoadStepPolicy step by step. No model is
served (the light path), so the gateway deployment is the one that scales: a replica starts in seconds, where an
engine replica would import torch first (bench/ray_ramp.py ramps the engine with a tiny model). The model path: the
gateway streams a tiny model's answers from the engine deployment, the adapter chosen by name."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from kefu.serve.autoscale import ScaleRule
from kefu.serve.config import ServeConfig
from kefu.serve.engine import EngineError, collect

REPO = Path(__file__).resolve().parents[2]
KEY = "ray-ramp-key-0123456789abcdef"  # bench/ray_ramp.py's customers send it
UP_DELAY, DOWN_DELAY, SAMPLE = 1.0, 1.5, 0.25


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ray_ramp_bench", REPO / "bench" / "ray_ramp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One small local Ray instance for the module (2 CPUs, no dashboard, 80 MB object store). Its workers inherit
    this process's environment as it is now: a module-wide $KEFU_HOME and the customers' key."""
    import ray

    saved = {name: os.environ.get(name) for name in ("KEFU_HOME", "KEFU_API_KEY")}
    os.environ.update(KEFU_HOME=str(tmp_path_factory.mktemp("ray_home")), KEFU_API_KEY=KEY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 ** 2)
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def deploy(local_ray):
    """Deploy kefu's Ray application with a config; Serve (not Ray) is shut down after the test."""
    from ray import serve

    from kefu.serve import ray_app

    def start(config: ServeConfig, **kwargs) -> str:
        return ray_app.start(config, **kwargs)

    try:
        yield start
    finally:
        serve.shutdown()


@pytest.fixture
def ray_light_app(deploy, free_port):
    """The Ray application without a model, its gateway scaled between 1 and 3 replicas of capacity 1."""
    from kefu.serve import ray_app

    config = ServeConfig(port=free_port, rate_limit_per_s=1000, rate_limit_burst=1000,
                         ray={"gateway": {"min_replicas": 1, "max_replicas": 3, "capacity": 1, "num_cpus": 0,
                                          "upscale_delay_s": UP_DELAY, "downscale_delay_s": DOWN_DELAY},
                              "metrics_interval_s": 0.25, "look_back_period_s": 1.0})
    url = deploy(config)
    assert ray_app.replicas() == {"gateway": {"target": 1, "running": 1}}  # no model: no engine deployment
    return url, config


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replicas_follow_the_policy_step_by_step_under_a_ramp(bench, ray_light_app):
    url, config = ray_light_app
    rule = ScaleRule.of(config.ray, config.ray.gateway)
    phases = [bench.Phase(0, 1.0),
              bench.Phase(4, 60, until=lambda s: s["running"] == rule.max_replicas, hold_s=2.0),
              bench.Phase(0, 30, until=lambda s: s["target"] == rule.min_replicas == s["running"], hold_s=2.0)]
    result = bench.ramp(url, None, phases, capacity=rule.capacity, deployment="gateway", sample_s=SAMPLE)
    trace, steps = result["trace"], bench.steps(result["trace"])
    assert result["answered"] > 20 and result["failed"] == 0

    # 1 -> +2 (load > 0.8) -> 3 = max (stays while the load is high) -> -1 -> -1 (load < 0.3) -> 1 = min (stays)
    assert [(s["from"], s["to"]) for s in steps] == [(1, 3), (3, 2), (2, 1)], steps
    up, *downs = steps
    assert up["phase"] == 1 and up["offered_load"] > rule.up_at
    assert all(s["phase"] == 2 and s["offered_load"] < rule.down_at for s in downs)

    # Ray held each decision for its delay: a step comes at least that long after the load changed or the last step
    start = {p: next(s["t"] for s in trace if s["phase"] == p) for p in (1, 2)}
    assert up["t"] - start[1] >= UP_DELAY
    assert downs[0]["t"] - start[2] >= DOWN_DELAY
    assert downs[1]["t"] - downs[0]["t"] >= DOWN_DELAY - SAMPLE  # sampled every SAMPLE seconds

    at_max = [s for s in trace if s["phase"] == 1 and s["running"] == rule.max_replicas]
    assert at_max and all(s["target"] == rule.max_replicas for s in at_max)  # +2 wanted, clamped to max
    at_min = [s for s in trace if s["phase"] == 2 and s["t"] >= downs[1]["t"]]
    assert at_min[-1]["t"] - at_min[0]["t"] >= 2.0 - SAMPLE and all(s["target"] == 1 for s in at_min)


def test_the_gateway_streams_answers_from_the_engine_deployment(deploy, free_port, tmp_path):
    """A tiny random model with one LoRA adapter ("shop") in the engine deployment: the base model is retired there
    (so the gateway offers only "shop"), and the answer, its usage and its stream come through Ray."""
    import httpx
    import torch
    from peft import LoraConfig, get_peft_model
    from serve_support import tiny_model, tiny_tokenizer

    from kefu.serve import ray_app

    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    torch.manual_seed(5)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(tiny_model(tok), lora).save_pretrained(tmp_path / "shop")
    config = ServeConfig(model=str(tmp_path / "tiny"), port=free_port, torch_threads=1, max_new_tokens=16,
                         ray={"engine": {"num_cpus": 0}, "gateway": {"num_cpus": 0}})
    url = deploy(config, adapters={"shop": str(tmp_path / "shop")})
    assert ray_app.replicas() == {"engine": {"target": 1, "running": 1}, "gateway": {"target": 1, "running": 1}}
    headers = {"Authorization": f"Bearer {KEY}"}
    assert [m["id"] for m in httpx.get(url + "/v1/models", headers=headers).json()["data"]] == ["shop"]

    body = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=60, json={
        "model": "shop", "messages": [{"role": "user", "content": "冲锋衣怎么洗比较好呢"}]}).json()
    assert body["kefu"]["path"] == "full" and body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == 16 and body["choices"][0]["finish_reason"] == "length"  # engine's
    with httpx.stream("POST", url + "/v1/chat/completions", headers=headers, timeout=60, json={
            "model": "shop", "stream": True, "messages": [{"role": "user", "content": "这个好用吗"}]}) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    assert '"finish_reason": "length"' in events[-2]

    # a replica's refusal reaches the gateway as an EngineError (what its fallback answers), not as Ray's error
    from ray import serve

    engine = ray_app.RayEngine(serve.get_deployment_handle("engine", app_name=ray_app.APP_NAME), ["shop"])
    with pytest.raises(EngineError, match="unknown adapter 'ghost'"):
        asyncio.run(collect(engine.stream([{"role": "user", "content": "在吗"}], model="ghost")))
