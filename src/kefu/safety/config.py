"""Settings of the safety stage (``safety:`` in kefu.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
