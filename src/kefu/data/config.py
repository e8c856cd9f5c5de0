"""Settings of the prepare stage (``prepare:`` in kefu.yaml); ``kefu prepare`` flags override them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMATS = ("auto", "openai", "sharegpt", "alpaca", "llamafactory", "turns", "txt")


class NormalizeConfig(BaseModel):
    """Text normalisation applied to every turn (greeting removal to customer turns only)."""

    model_config = ConfigDict(extra="forbid")

    strip_greetings: bool = True  # 亲/您好/请问... at the start of customer turns (kept when nothing else is left)
    fullwidth_to_halfwidth: bool = True  # ＡＢＣ１２３ -> ABC123 (letters, digits, full-width space only)
    traditional_to_simplified: bool = False  # via zhconv; off by default (slow, and shops may serve 繁体 users)
    collapse_whitespace: bool = True
    emoji: Literal["remove", "keep"] = "remove"
    merge_separator: str = " "  # joins consecutive messages of one speaker


class FilterConfig(BaseModel):
    """Quality filters; a dialogue failing one is dropped and counted under that reason."""

    model_config = ConfigDict(extra="forbid")

    min_turns: int = Field(2, ge=1)  # user + assistant turns after merging
    min_chars: int = Field(4, ge=0)  # all turns together
    max_chars: int = Field(8000, ge=1)
    max_turns: int = Field(120, ge=2)
    max_garbled_ratio: float = Field(0.1, ge=0, le=1)  # share of mojibake/replacement/control characters


class DedupConfig(BaseModel):
    """Exact and near-duplicate removal across dialogues (MinHash over character shingles, LSH index)."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = True
    threshold: float = Field(0.85, gt=0, le=1)  # estimated Jaccard similarity at which a dialogue is a near-dup
    shingle: int = Field(3, ge=1, le=16)  # characters per shingle
    num_perm: int = Field(64, ge=8, le=512)


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "openai", "sharegpt", "alpaca", "llamafactory", "turns", "txt"] = "auto"
    on_error: Literal["skip", "fail"] = "skip"
    seed: int = 42
    val_ratio: float = Field(0.05, ge=0, lt=1)
    test_ratio: float = Field(0.05, ge=0, lt=1)
    mask_pii: bool = True
    annotate: bool = True
    augment: bool = True
    augment_ratio: float = Field(0.3, ge=0, le=4)  # tier-3 samples per train dialogue (on average)
    augment_kinds: list[Literal["paraphrase", "entity_swap", "noise", "injection"]] = Field(
        default_factory=lambda: ["paraphrase", "entity_swap", "noise", "injection"])
    catalogue: str | None = None  # products.csv for entity lexicons
    # "module:Class" of an Annotator (kefu.data.annotate.Annotator protocol), built in each worker with
    # ``Class(catalogue=Catalogue | None)``; the rule annotator by default. Lets a learned tagger replace the rules.
    annotator: str = "kefu.data.annotate:RuleAnnotator"
    workers: int = Field(0, ge=0, le=64)  # 0: one per CPU core (at most 4); 1: in-process
    normalize: NormalizeConfig = NormalizeConfig()
    filters: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()

    @model_validator(mode="after")
    def _ratios(self) -> "PrepareConfig":
        if self.val_ratio + self.test_ratio >= 1:
            raise ValueError("val_ratio + test_ratio must be below 1 (something must be left to train on)")
        return self
