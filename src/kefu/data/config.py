"""Settings of the prepare stage (``prepare:`` in kefu.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = "auto"
    on_error: Literal["skip", "fail"] = "skip"
    seed: int = 42
    val_ratio: float = 0.05
    test_ratio: float = 0.05
