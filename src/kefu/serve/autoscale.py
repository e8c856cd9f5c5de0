"""How many replicas a deployment of ``kefu serve --ray`` runs: a step policy on load, pure, for Ray Serve to call.

load = ongoing requests / (running replicas x capacity), where capacity is the ongoing requests one replica takes
(its ``max_ongoing_requests``). Above ``up_at`` the deployment gains ``up_step`` replicas, below ``down_at`` it
loses ``down_step``, always within [min_replicas, max_replicas]; in between it keeps its target. A step up waits
until the previous one is running (its load is measured on running replicas, so replicas still starting would
otherwise count as missing and trigger another step).

Ray Serve (2.60, ``AutoscalingConfig.policy``) instantiates ``LoadStepPolicy`` with ``rule.kwargs()`` and calls it
on each control-loop tick with an ``AutoscalingContext``; Ray then holds a decision for ``upscale_delay_s`` /
``downscale_delay_s`` before it acts (``autoscaling_config`` puts them there from ``serve.ray``). No Ray import here:
the policy runs inside Ray's controller, and this module is pickled there by value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kefu.serve.config import RayDeploymentConfig, RayServeConfig


@dataclass(frozen=True)
class ScaleRule:
    """One deployment's scaling rule: its bounds and capacity (``serve.ray.<deployment>``) and the shared
    thresholds and steps (``serve.ray``)."""

    capacity: int
    min_replicas: int
    max_replicas: int
    up_at: float = 0.8
    down_at: float = 0.3
    up_step: int = 2
    down_step: int = 1

    @classmethod
    def of(cls, ray: RayServeConfig, deployment: RayDeploymentConfig) -> ScaleRule:
        return cls(deployment.capacity, deployment.min_replicas, deployment.max_replicas, ray.up_at, ray.down_at,
                   ray.up_step, ray.down_step)

    def kwargs(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments (Ray's ``policy_kwargs``)."""
        return asdict(self)

    def load(self, ongoing: float, running: int) -> float:
        """Ongoing requests per unit of running capacity (1.0: every running replica at its capacity)."""
        return ongoing / (max(running, 1) * self.capacity)

    def next_replicas(self, ongoing: float, running: int, target: int) -> int:
        """The target after this tick, from the current ``target``, with ``running`` replicas up."""
        load = self.load(ongoing, running)
        if load > self.up_at:
            wanted = target if running < target else target + self.up_step
        elif load < self.down_at:
            wanted = target - self.down_step
        else:
            wanted = target
        return min(max(wanted, self.min_replicas), self.max_replicas)


class LoadStepPolicy:
    """``ScaleRule`` as a Ray Serve custom autoscaling policy (a class: Ray builds it once with ``policy_kwargs``)."""

    def __init__(self, **rule: Any):
        self.rule = ScaleRule(**rule)

    def __call__(self, ctx) -> tuple[int, dict[str, Any]]:
        """(replicas wanted, policy state) from Ray's ``AutoscalingContext``; the load goes into the state."""
        ongoing = ctx.total_num_requests
        running = ctx.current_num_replicas
        state = dict(ctx.policy_state)
        state["load"] = self.rule.load(ongoing, running)
        return self.rule.next_replicas(ongoing, running, ctx.target_num_replicas), state


def autoscaling_config(ray: RayServeConfig, deployment: RayDeploymentConfig) -> dict[str, Any]:
    """The ``autoscaling_config`` of a deployment (``serve.deployment(autoscaling_config=...)`` or a Serve config
    file): ``LoadStepPolicy`` with this deployment's rule, its bounds, delays and metric windows."""
    rule = ScaleRule.of(ray, deployment)
    return {"min_replicas": deployment.min_replicas, "initial_replicas": deployment.min_replicas,
            "max_replicas": deployment.max_replicas, "upscale_delay_s": deployment.upscale_delay_s,
            "downscale_delay_s": deployment.downscale_delay_s, "metrics_interval_s": ray.metrics_interval_s,
            "look_back_period_s": ray.look_back_period_s,
            "policy": {"policy_function": f"{__name__}:LoadStepPolicy", "policy_kwargs": rule.kwargs()}}
