"""Settings of the eval stage (``eval:`` in kefu.yaml). CLI flags override them."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class JudgeConfig(BaseModel):
    """The optional LLM satisfaction judge (off by default): any OpenAI-compatible chat endpoint."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    endpoint: Optional[str] = None  # e.g. http://localhost:8000/v1
    model: str = "judge"
    api_key_env: str = "KEFU_JUDGE_API_KEY"  # the key is read from this environment variable, never from the file
    max_samples: int = Field(200, ge=1)
    timeout_s: float = Field(60.0, gt=0)


class EvalConfig(BaseModel):
    """How replies are generated and scored."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False  # greedy by default: evaluation must be reproducible
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    last_turn_only: bool = False  # score only the final agent turn of each dialogue
    max_samples: Optional[int] = Field(None, ge=1)
    concurrency: int = Field(8, ge=1)  # in-flight requests when generating through an HTTP endpoint
    timeout_s: float = Field(120.0, gt=0)  # per HTTP request
    perplexity: bool = True  # fluency under the base model, when a local model is loaded
    human_bar: float = Field(0.85, gt=0, le=1)  # model score as a share of human-vs-human agreement to flag
    worst_examples: int = Field(10, ge=0)
    judge: JudgeConfig = JudgeConfig()
