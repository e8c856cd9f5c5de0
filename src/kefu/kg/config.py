"""Settings of the kg stage (``kg:`` in kefu.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KGConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
