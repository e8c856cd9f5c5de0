"""Settings of the loop stage (``loop:`` in kefu.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
