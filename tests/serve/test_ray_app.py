"""kefu serve --ray on a real local Ray instance (2 CPUs, no dashboard): customers ramp up and leave on loopback and
the replicas follow LoadStepPolicy step by step. No model is served (the light path), so the gateway deployment is
the one that scales: a replica starts in seconds, where an engine replica would import torch first (bench/ray_ramp.py
ramps the engine with a tiny model)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kefu.serve.autoscale import ScaleRule
from kefu.serve.config import ServeConfig

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


@pytest.fixture
def ray_light_app(monkeypatch, free_port):
    """The Ray application without a model, its gateway scaled between 1 and 3 replicas of capacity 1."""
    import ray

    from kefu.serve import ray_app

    monkeypatch.setenv("KEFU_API_KEY", KEY)
    config = ServeConfig(port=free_port, rate_limit_per_s=1000, rate_limit_burst=1000,
                         ray={"gateway": {"min_replicas": 1, "max_replicas": 3, "capacity": 1, "num_cpus": 0,
                                          "upscale_delay_s": UP_DELAY, "downscale_delay_s": DOWN_DELAY},
                              "metrics_interval_s": 0.25, "look_back_period_s": 1.0})
    # replicas of a local Ray inherit this process's environment: $KEFU_HOME (this test's) and the key
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 ** 2)
    try:
        url = ray_app.start(config)
        assert ray_app.replicas() == {"gateway": {"target": 1, "running": 1}}  # no model: no engine deployment
        yield url, config
    finally:
        ray_app.shutdown()


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
