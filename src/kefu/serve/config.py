"""Settings of the serve stage (``serve:`` in kefu.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
