"""Settings of the serve stage (``serve:`` in kefu.yaml). CLI flags of ``kefu serve`` override them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


# ---- serve.ray: `kefu serve --ray` (kefu.serve.ray_app), the gateway and the engine as autoscaled Ray Serve
# deployments (policy: kefu.serve.autoscale) ----------------------------------------------------------------------
class RayDeploymentConfig(BaseModel):
    """One Ray Serve deployment's replicas: bounds, the ongoing requests one replica takes, and how long a scaling
    decision must hold before Ray acts on it."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1)
    capacity: int = Field(8, ge=1)  # ongoing requests one replica takes (its max_ongoing_requests): load 1.0
    num_cpus: float = Field(1.0, ge=0)  # Ray CPUs reserved per replica
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> RayDeploymentConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class RayServeConfig(BaseModel):
    """``serve.ray``: load = ongoing requests / (replicas x capacity); above ``up_at`` a deployment gains
    ``up_step`` replicas, below ``down_at`` it loses ``down_step``, within its bounds."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # a running Ray cluster ("auto", "ray://host:10001"); None starts one here
    gateway: RayDeploymentConfig = Field(default_factory=lambda: RayDeploymentConfig(capacity=32, num_cpus=0.5))
    engine: RayDeploymentConfig = Field(default_factory=RayDeploymentConfig)
    up_at: float = Field(0.8, gt=0)
    down_at: float = Field(0.3, ge=0)
    up_step: int = Field(2, ge=1)
    down_step: int = Field(1, ge=1)
    metrics_interval_s: float = Field(1.0, gt=0)  # how often replicas report their ongoing requests
    look_back_period_s: float = Field(5.0, gt=0)  # the window the reported load is averaged over

    @model_validator(mode="after")
    def _thresholds(self) -> RayServeConfig:
        if self.down_at >= self.up_at:
            raise ValueError(f"down_at {self.down_at} must be below up_at {self.up_at}")
        return self
# ---- end of serve.ray ----------------------------------------------------------------------------------------------


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model: str | None = None  # base model; None -> kefu.train.models.DEFAULT_MODEL
    engine: Literal["local", "remote"] = "local"
    remote_url: str | None = None  # OpenAI-compatible server (e.g. vLLM --enable-lora)
    remote_api_key: str | None = None
    remote_timeout_s: float = Field(30.0, gt=0)
    remote_retries: int = Field(2, ge=0, le=10)
    kg_url: str | None = None
    auth: bool = True
    # gateway
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    rate_limit_per_s: float = Field(20.0, gt=0)  # token bucket refill per API key
    rate_limit_burst: int = Field(40, ge=1)
    # engine
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_ms: float = Field(10.0, ge=0)
    max_new_tokens: int = Field(128, ge=1, le=4096)
    # the untuned base model never answers customers unless asked for (experiments): without a trained run kefu
    # answers from the knowledge graph, the shop's past replies and a handoff to a human
    allow_base_model: bool = False
    # the shop's past replies: a ReplyIndex file (a run's replies.npz is used by default) or prepared data to index
    replies: str | None = None
    reply_min_similarity: float = Field(0.9, ge=0, le=1)  # how close an earlier question must be to reuse its reply
    # where the shop's data holds nothing about a turn (no product, promotion or order: greetings, thanks, process
    # questions), the reply the shop's agents agree on answers it: the most agreed of the consensus_k best past
    # replies whose asked message is at least consensus_min_similarity alike (kefu.kg.replies.ReplyIndex.consensus),
    # when its agreement reaches consensus_min_agreement; consensus_k 0 turns it off. The defaults are the eval's
    # consensus baseline's and the threshold measured there (kefu.kg.replies.CONSENSUS_*; config imports no stage)
    consensus_k: int = Field(20, ge=0, le=200)
    consensus_min_similarity: float = Field(0.1, ge=0, le=1)
    consensus_min_agreement: float = Field(0.15, ge=0, le=1)
    # bounded waits: a model answer not finished this many seconds after the request arrived is cut (the customer
    # gets what was verified so far, or the light answer or a handoff instead); 0 turns it off
    answer_deadline_s: float = Field(9.0, ge=0)  # 9 s: with the HTTP round trip every customer is answered in 10
    # admission: model turns beyond this many in flight are answered at once from the light path or handed off
    # (None: twice max_batch_size)
    max_model_requests: int | None = Field(None, ge=1)
    # answer budget per intent (kefu.data.taxonomy ids; serve.engine.token_budget), never above max_new_tokens;
    # intents not listed get max_new_tokens
    max_new_tokens_by_intent: dict[str, Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: {
        "greeting": 32, "price_inquiry": 64, "stock_inquiry": 64, "order_status": 64, "logistics_tracking": 64})
    # repetition control on the reply's own tokens (serve.engine.repetition): the CTRL/transformers repetition
    # penalty (1: off) and a ban on repeating any n-gram of the reply (0: off); a request may override both
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)
    no_repeat_ngram_size: int = Field(4, ge=0, le=16)
    # send repetition_penalty to remote_url (vLLM accepts it; OpenAI's API rejects unknown fields)
    remote_sampling_extras: bool = False
    # CPU: int8-weight = int8 weights with bf16 activations (kefu.train.quant; ~2x faster decode), int8 = torch.ao
    # dynamic quantisation (activations too; loses most of Gemma 3's greedy tokens)
    quantize: Literal["none", "int8", "int8-weight"] = "none"
    # vocabulary trim (vocab_trim.json or its folder, from `kefu export --trim-vocab`): decode over the shop's tokens
    trim_vocab: str | None = None
    # prompt-lookup speculation: up to this many tokens copied from earlier in the conversation are verified in one
    # decode step; greedy answers are unchanged, steps fewer (0: off)
    draft_tokens: int = Field(4, ge=0, le=16)
    torch_threads: int | None = Field(None, ge=1)  # None: torch's default (all cores)
    # cache and sessions
    cache_ttl_s: float = Field(600.0, ge=0)
    cache_max_entries: int = Field(10000, ge=0)
    max_sessions: int = Field(10000, ge=1)
    max_turns_per_session: int = Field(50, ge=2)
    handoff_after_failures: int = Field(2, ge=1)
    # router
    router_target_full_share: float = Field(0.3, ge=0, le=1)
    # serve.ray (see RayServeConfig above)
    ray: RayServeConfig = Field(default_factory=RayServeConfig)
