"""Settings of the train stage (``train:`` in kefu.yaml); CLI flags override them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Everything a training run needs besides its data and output folder (written to RUN/config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("gemma3-270m", description="embedded model name or a local Hugging Face folder")
    init_adapter: str | None = Field(None, description="start from this LoRA adapter (incremental fine-tuning)")
    # data
    max_len: int = Field(1024, ge=16, description="tokens per packed row; also the longest dialogue kept whole")
    overlong: Literal["split", "truncate"] = Field(
        "split", description="dialogues over max_len: split at customer turns (default) or cut at max_len")
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    system_prompt: str | None = Field(None, description="prepended to dialogues without a system message")
    facts_in_system: bool = Field(False, description="append each dialogue's meta.facts to its system prompt")
    kg_url: str | None = Field(None, description="train as you serve: render each agent turn with the facts this "
                                                 "knowledge graph gives for it (a SQLAlchemy URL, a .db file, or a shop "
                                                 "folder imported into a temporary SQLite graph), the reply's facts as "
                                                 "slots; None: the dialogues as they are")
    shop_name: str = Field("本店", description="the shop's name in the system prompt of grounded examples (as serving's)")
    exemplars: int = Field(2, ge=0, le=8, description="with kg_url: the shop's past replies to the most alike "
                                                      "questions shown in each turn's prompt (never the turn's own "
                                                      "dialogue); serving shows the same number; 0: none")
    # LoRA
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="leaf names of the layers LoRA adapts; all-linear: every attention and MLP "
                                  "projection (MoE routers never; kefu.train.targets)")
    lora_experts: bool = Field(False, description="mixture-of-experts models: LoRA on the fused routed experts too "
                                                  "(needs lora_dropout 0; serve merged, kefu.train.targets)")
    use_rslora: bool = False
    use_dora: bool = False
    # optimisation
    batch_size: int = Field(32, ge=1, description="dialogues per optimizer step (over all processes)")
    micro_batch_rows: int = Field(1, ge=1, description="packed rows per forward pass (gradient accumulation "
                                                        "covers the rest of the batch)")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 42
    # hardware
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (fp16 + GradScaler without bf16) on GPU; on CPU bf16 where the CPU "
                            "has native bf16 matmuls (AVX512-BF16/AMX), else fp32")
    logit_grad_floor: float = Field(
        2 ** -16, ge=0, le=2 ** -10, description="CPU: vocabulary columns whose probability stays below this at "
                                                 "every position of a loss chunk (256 positions for Gemma's 262k "
                                                 "vocabulary) leave the loss's backward product (0: exact)")
    gradient_checkpointing: bool | None = Field(None, description="default: on for GPU, off for CPU")
    compile: bool = Field(False, description="torch.compile the model body")
    fsdp: bool = Field(False, description="several processes: shard the base model, LoRA weights, gradients and "
                                          "optimizer state over them (FSDP2, like ZeRO-3) instead of a full copy "
                                          "each (DDP); for bases that do not fit one device")
    # outputs
    save_steps: int = Field(50, ge=0, description="checkpoint every N steps (0: only the final adapter)")
    keep_checkpoints: int = Field(2, ge=1)
    eval_steps: int = Field(0, ge=0, description="validation loss every N steps (0: only at the end)")
    logging_steps: int = Field(1, ge=1)
    tensorboard: bool = True

