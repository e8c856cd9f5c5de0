"""Settings of the improvement loop (``loop:`` in kefu.yaml): retraining data mix, the promotion gate, export."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replay_ratio: float = Field(1.0, ge=0, description="old training dialogues replayed per new dialogue")
    gate_metrics: list[str] = Field(default_factory=lambda: ["rougeL", "bleu4"],
                                    description="metrics.json keys the candidate must hold on old and new test sets")
    tolerance: float = Field(0.5, ge=0, description="how far (in metric points) a candidate may fall and still pass")
    eval_max_samples: int | None = Field(64, ge=1, description="test turns scored per gate evaluation")
    eval_max_new_tokens: int = Field(48, ge=1)
    min_rating_ok: int = Field(4, ge=1, le=5, description="ratings below this count as failures in analysis")
    parity_atol: float = Field(1e-3, gt=0, description="max |logit| difference allowed between merged and base+adapter")
