"""Settings of the kg stage (``kg:`` in kefu.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class KGConfig(BaseModel):
    """Where the shop knowledge graph lives, how the order system is reached, and retrieval/recommendation knobs."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///$KEFU_HOME/kg.db (PostgreSQL works).")
    order_backend: Literal["sqlite", "http"] = Field(
        "sqlite", description="sqlite: the demo orders imported into the KG; http: the shop's own order service.")
    order_api_url: str | None = Field(None, description="Base URL of the shop's order service (order_backend: http).")
    order_api_key_env: str = Field("KEFU_ORDER_API_KEY", description="Environment variable holding its API key.")
    order_api_timeout_s: float = Field(3.0, gt=0, description="Per-request timeout of the order service.")
    max_facts: int = Field(12, ge=1, description="At most this many facts go into the prompt block.")
    faq_min_similarity: float = Field(0.6, ge=0, le=1, description="Character-bigram Jaccard for a near FAQ match.")
    recommend_lambda: float = Field(0.6, ge=0, le=1, description="MMR trade-off: 1 = relevance only, 0 = diversity.")
