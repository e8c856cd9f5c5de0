"""Settings of the safety stage (``safety:`` in kefu.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DPConfig(BaseModel):
    """Differential privacy defaults for ``kefu train --dp`` (flags override)."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(8.0, gt=0, description="Privacy budget ε for the whole training run.")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ; keep it below 1/(number of training dialogues).")
    max_grad_norm: float = Field(1.0, gt=0, description="Per-sample gradient clipping bound.")


class SafetyConfig(BaseModel):
    """Compliance rules, output filtering, the injection guard and DP defaults."""

    model_config = ConfigDict(extra="forbid")

    compliance_rules: str | None = Field(None, description="The shop's compliance YAML (extra/disabled terms).")
    output_filter: Literal["rewrite", "flag", "off"] = Field(
        "rewrite", description="What serve does with a non-compliant reply: rewrite it, only flag it, or nothing.")
    injection_guard: bool = Field(True, description="Refuse prompt-injection attempts before calling the model.")
    dp: DPConfig = DPConfig()
