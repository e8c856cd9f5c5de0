"""The replica policy of kefu serve --ray, step by step (pure), and as Ray Serve takes it (AutoscalingConfig)."""

from __future__ import annotations

import pytest

from kefu.serve.autoscale import LoadStepPolicy, ScaleRule, autoscaling_config
from kefu.serve.config import RayDeploymentConfig, RayServeConfig

RULE = ScaleRule(capacity=4, min_replicas=1, max_replicas=6)


def test_a_ramp_up_and_down_step_by_step():
    """Each row: ongoing requests -> (load, next target); replicas come up before the next tick."""
    steps = [(0, 0.0, 1),      # idle at the floor: -1 clamped to min
             (2, 0.5, 1),      # between the thresholds: hold
             (4, 1.0, 3),      # > 0.8: +2
             (4, 4 / 12, 3),   # 0.33: hold
             (12, 1.0, 5),     # +2
             (12, 0.6, 5),     # hold
             (30, 1.5, 6),     # +2 clamped to max
             (30, 1.25, 6),    # still > 0.8: stays at max
             (5, 5 / 24, 5),   # < 0.3: -1
             (5, 0.25, 4),     # -1
             (5, 5 / 16, 4),   # 0.31: hold
             (0, 0.0, 3), (0, 0.0, 2), (0, 0.0, 1), (0, 0.0, 1)]
    replicas = 1
    for ongoing, load, expected in steps:
        assert RULE.load(ongoing, replicas) == pytest.approx(load)
        replicas = RULE.next_replicas(ongoing, replicas, replicas)
        assert replicas == expected, (ongoing, load)


def test_thresholds_are_strict_and_a_step_up_waits_for_the_last_one():
    assert RULE.next_replicas(0.8 * 8, 2, 2) == 2  # load exactly 0.8: hold
    assert RULE.next_replicas(0.3 * 8, 2, 2) == 2  # load exactly 0.3: hold
    assert RULE.next_replicas(20, 1, 3) == 3  # two replicas still starting: no new step yet
    assert RULE.next_replicas(20, 3, 3) == 5
    assert RULE.next_replicas(0, 4, 3) == 2  # going down does not wait (a replica may still be stopping)
    steps = ScaleRule(capacity=1, min_replicas=2, max_replicas=9, up_step=3, down_step=2)
    assert steps.next_replicas(5, 2, 2) == 5 and steps.next_replicas(0, 5, 5) == 3 and steps.next_replicas(0, 3, 3) == 2


def test_ray_takes_the_policy_from_the_serve_config():
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    ray_cfg = RayServeConfig(engine=RayDeploymentConfig(min_replicas=1, max_replicas=5, capacity=2,
                                                        upscale_delay_s=3, downscale_delay_s=7), up_step=2)
    config = AutoscalingConfig(**autoscaling_config(ray_cfg, ray_cfg.engine))
    assert (config.min_replicas, config.max_replicas, config.upscale_delay_s, config.downscale_delay_s) == (1, 5, 3, 7)
    policy_class = config.policy.get_policy()  # what Ray's controller unpickles
    assert policy_class.__name__ == "LoadStepPolicy"
    policy = policy_class(**config.policy.policy_kwargs)

    def context(ongoing: float, running: int, target: int) -> AutoscalingContext:
        return AutoscalingContext(deployment_id=None, deployment_name="engine", app_name="kefu",
                                  current_num_replicas=running, target_num_replicas=target, running_replicas=[],
                                  total_num_requests=ongoing, total_queued_requests=0, aggregated_metrics={},
                                  raw_metrics={}, capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=5,
                                  policy_state={}, last_scale_up_time=None, last_scale_down_time=None,
                                  current_time=0.0, config=config)

    assert policy(context(4, 1, 1)) == (3, {"load": 2.0})
    assert policy(context(6, 3, 3))[0] == 5
    assert policy(context(2, 5, 5)) == (4, {"load": 0.2})
    assert LoadStepPolicy(**ScaleRule.of(ray_cfg, ray_cfg.engine).kwargs())(context(1, 1, 1))[0] == 1
