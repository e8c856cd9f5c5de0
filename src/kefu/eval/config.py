"""Settings of the eval stage (``eval:`` in kefu.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
