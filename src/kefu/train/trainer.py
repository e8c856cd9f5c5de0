"""LoRA fine-tuning: packed rows, loss only where the agent speaks, DDP-ready, resumable.

The CPU lever: the vocabulary projection (Gemma: 262k x 640) and the cross entropy are computed only at
supervised positions. The model body runs once over the packed row, hidden states are gathered where the next
token is an agent token, and only those go through ``lm_head``. The loss of a step is the sum of token losses over
the whole step (all micro-batches, all processes) divided by the step's supervised-token count, so the result does
not depend on how dialogues were packed or split across processes.

Run under ``torchrun``/``accelerate launch`` and the same code does DDP (gloo on CPU, NCCL on GPU): each process
takes its share of every step's dialogues and gradients are all-reduced on the last micro-batch only. With
``train.fsdp`` (``--fsdp``, or ``accelerate launch --use_fsdp``) the model is sharded instead (FSDP2 per decoder
layer: each process holds 1/N of the base weights, LoRA weights, gradients and AdamW state, like DeepSpeed ZeRO-3);
every process then runs the same number of forward passes per step (the all-gathers must pair up).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from kefu.artifacts.run import (ADAPTER_CONFIG, ADAPTER_DIR, ADAPTER_INFO, ADAPTER_WEIGHTS, STATE_FILE, TrainRun,
                               is_adapter)
from kefu.heap import large_allocations_kept
from kefu.kg.replies import ReplyIndex
from kefu.progress import Progress
from kefu.safety import audit
from kefu.safety.consent import require_consent
from kefu.safety.keys import authorized
from kefu.train.attention import row_segments, use_packed_attention
from kefu.train.config import TrainConfig
from kefu.train.data import Example, check_data, collate, find_data, load_examples, pack, step_indices
from kefu.train.dropout import use_bits_dropout
from kefu.train.estimate import (Cost, Workload, estimate, estimate_lines, last_turn_workload, measured_line,
                                 prior_rate, suggestions, warn_after_default, warning_lines)
from kefu.train.fastlora import use_fused_lora
from kefu.train.loss import linear_cross_entropy, output_mean
from kefu.train.models import check_adapter, license_note, load_model, resolve_model
from kefu.train.targets import lora_targets
from kefu.train.template import IGNORE_INDEX, stop_strings, template_kind
from kefu.types import KefuError

log = logging.getLogger(__name__)

class SupervisedLM(nn.Module):
    """Wraps a (PEFT) causal LM: forward returns the summed loss over supervised next tokens and their count.

    ``fast=True`` (the default) switches an SDPA model to per-dialogue attention over packed rows
    (``kefu.train.attention``) and computes the loss through the frozen output projection in chunks
    (``kefu.train.loss``); both give the same numbers as the plain path (tests/train/test_packing.py).
    ``grad_floor`` > 0 lets that loss leave improbable vocabulary columns out of its backward product
    (``linear_cross_entropy``); the trainer sets it on CPU only.
    """

    def __init__(self, model: nn.Module, fast: bool = True, grad_floor: float = 0.0):
        super().__init__()
        self.model = model
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        # body and lm_head are views into ``model``, kept out of the module tree: registering them twice would make
        # hook-based tools (Opacus per-sample gradients, some profilers) see every LoRA layer twice
        object.__setattr__(self, "body", causal.get_decoder() if hasattr(causal, "get_decoder") else causal.model)
        object.__setattr__(self, "lm_head", causal.get_output_embeddings())
        self.softcap = getattr(causal.config, "final_logit_softcapping", None)
        self.packed = fast and use_packed_attention(causal)
        self.fused_loss = fast and type(self.lm_head) is nn.Linear and self.lm_head.bias is None
        self.grad_floor = grad_floor
        self._head_mean: tuple[tuple, torch.Tensor] | None = None  # (weight identity, its mean row)

    def head_mean(self) -> torch.Tensor:
        """The output projection's mean row in fp32, recomputed when the (frozen) weight changes: another tensor,
        dtype or device, or an in-place write that bumps its version (writes through ``.data`` do not)."""
        weight = self.lm_head.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._head_mean is None or self._head_mean[0] != key:
            self._head_mean = (key, output_mean(weight))
        return self._head_mean[1]

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor):
        extra = {"kefu_segments": row_segments(position_ids)} if self.packed else {}
        hidden = self.body(input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                           use_cache=False, **extra).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        picked = hidden[:, :-1][keep]  # (n_supervised, hidden): the only rows that reach lm_head
        if self.fused_loss:
            floor = self.grad_floor if torch.is_grad_enabled() else 0.0
            loss = linear_cross_entropy(picked, self.lm_head.weight, targets[keep], softcap=self.softcap,
                                        grad_floor=floor, weight_mean=self.head_mean() if floor else None)
        else:
            logits = self.lm_head(picked).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            loss = F.cross_entropy(logits, targets[keep], reduction="sum")
        return loss, keep.sum()


def lora_config(config: TrainConfig, model: nn.Module):
    """PEFT's LoraConfig for ``config`` on ``model``, its layers resolved by ``kefu.train.targets``."""
    from peft import LoraConfig

    targets = lora_targets(model, config)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets.modules, target_parameters=targets.parameters or None,
                      use_rslora=config.use_rslora, use_dora=config.use_dora, bias="none", task_type="CAUSAL_LM")


# --------------------------------------------------------------------------------------------- distributed setup
def _dist_setup() -> tuple[int, int]:
    """``(rank, world)``; joins the process group when launched by torchrun/accelerate."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_on_rank0_first(model: str) -> Path:
    """The base model's folder, resolved (an embedded model converted, once) by rank 0 while the other ranks wait
    at a barrier, so that a fresh machine's ranks do not all load and convert the GGUF; the others then find the
    cache complete (or, on another node with its own cache, build it one at a time behind the cache's file lock)."""
    if not dist.is_initialized():
        return resolve_model(model)
    if dist.get_rank() == 0:
        try:
            return resolve_model(model)
        finally:  # the others go on even when rank 0 fails: they meet the same error instead of hanging
            dist.barrier()
    dist.barrier()
    return resolve_model(model)


def _default_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under torchrun/accelerate, else the first) or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or dist.is_initialized()
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) if distributed else 0}")


def _launched_with_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")


def wants_fsdp(config: TrainConfig) -> bool:
    """``train.fsdp``, or a launch by ``accelerate launch --use_fsdp`` (which says so in the environment)."""
    return config.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def shard_model(wrapper: "SupervisedLM") -> int:
    """FSDP2 on every decoder layer, then on the wrapper (embeddings, final norm, output projection); returns the
    number of layers sharded. Parameters become DTensors holding this process's shard."""
    from torch.distributed.fsdp import fully_shard

    layers = wrapper.body.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(wrapper)
    return len(layers)


def full_adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) weights gathered whole from their shards; a collective: every process calls it."""
    from torch.distributed.tensor import DTensor

    return {name: (param.full_tensor() if isinstance(param, DTensor) else param).detach().cpu()
            for name, param in model.named_parameters() if param.requires_grad}


def _all_max(value: int, device) -> int:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _all_sum(value: float | int, device) -> float:
    if not dist.is_initialized():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


# ------------------------------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------------ helpers
def _precision(config: TrainConfig, device: torch.device) -> str:
    if config.precision != "auto":
        return config.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 matmuls natively (AVX512-BF16 / AMX): then bf16 autocast is ~2x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def keep_lora_input_dtype(model: nn.Module) -> int:
    """Stop PEFT from casting every LoRA layer's input to the adapter's fp32 (under autocast; returns the count).

    PEFT copies a bf16 input to fp32 for each LoRA layer and autocast copies it back to bf16 for the matmul: two
    passes over the activations per layer and a saved bf16 copy per layer (q, k and v each keep their own), with
    identical numbers (bf16 -> fp32 -> bf16 is exact). Only valid while training runs under autocast. DoRA layers
    keep the cast: DoRA computes its weight norm in the input's dtype, so there the numbers would change.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)
              and not any(getattr(m, "use_dora", {}).values())]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def speed_up_lora(model: nn.Module, device: torch.device, precision: str, fused: bool = True) -> None:
    """The trainer's LoRA speed-ups, same numbers as PEFT's forward (each module tests that): on CPU LoRA dropout
    from 64-bit random draws (``kefu.train.dropout``); under autocast no fp32 copy of LoRA inputs; the scaled
    update added inside one ``addmm`` (``kefu.train.fastlora``; ``fused=False`` keeps PEFT's forward)."""
    if device.type == "cpu":
        use_bits_dropout(model)
    if precision != "fp32":
        keep_lora_input_dtype(model)
    if fused:
        use_fused_lora(model)


def _micro_batches(examples: list[Example], config: TrainConfig, pad_id: int) -> list[dict[str, torch.Tensor]]:
    rows = pack(examples, config.max_len)
    return [collate(rows[i:i + config.micro_batch_rows], pad_id) for i in range(0, len(rows), config.micro_batch_rows)]


@torch.no_grad()
def evaluate_loss(wrapper: SupervisedLM, examples: list[Example], config: TrainConfig, pad_id: int,
                  device: torch.device, precision: str, filler: Example | None = None) -> float | None:
    """Mean cross entropy per supervised token over ``examples`` (this process's share, summed over all).

    ``filler`` (sharded models): every process runs as many forward passes as the busiest one, the extra ones on
    this example, their results dropped."""
    was_training = wrapper.training
    wrapper.eval()
    total, count = 0.0, 0
    batches = _micro_batches(examples, config, pad_id) if examples else []
    real = len(batches)
    if filler is not None:
        batches += _micro_batches([filler], config, pad_id) * (_all_max(real, device) - real)
    for index, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(precision, device):
            loss, n = wrapper(**batch)
        if index < real:
            total += float(loss)
            count += int(n)
    wrapper.train(was_training)
    total, count = _all_sum(total, device), _all_sum(count, device)
    return total / count if count else None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("kefu", "torch", "transformers", "peft"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _tensorboard(folder: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(folder))


# -------------------------------------------------------------------------------------------------------- train
@authorized("model:train")
def train(config: TrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          progress: bool = True, on_step: Callable[[int, dict], None] | None = None,
          device: str | torch.device | None = None, warn_after_s: float | None = None,
          consent_override: str | None = None) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on ``data`` (the prepare stage's folder or a train.jsonl) into ``out``.

    Writes ``out/adapter`` (PEFT, loadable by vLLM ``--lora-modules``), ``config.yaml``, ``metrics.jsonl``,
    ``train_report.json`` and checkpoints; returns the report. ``resume`` continues from the last checkpoint in
    ``out``. ``on_step(step, metrics)`` is called after every optimizer step (and after its checkpoint).

    Before the first step the expected time goes to stderr (``kefu.train.estimate``), corrected after the first
    steps are timed, with a warning and shorter settings when it is over ``warn_after_s`` (default: an hour on CPU,
    eight on a GPU); the report keeps both estimates and the actual time (``time_estimate``). ``progress``: a bar
    on a terminal, a plain line every ~30 s otherwise (``kefu.progress``).

    Needs ``model:train`` (``kefu.safety.keys.authorize``; the audit entries name that key), and refuses training
    data without a valid consent/provenance record unless ``consent_override`` gives a reason, which is audited
    (``kefu.safety.consent.require_consent``) — both before anything is loaded.
    """
    require_consent([find_data(data)[0]], override_reason=consent_override)
    device = torch.device(device) if device is not None else _default_device()
    # a CPU step frees and reallocates the same large activations: the heap keeps them while training (kefu.heap)
    with large_allocations_kept(device.type == "cpu"):
        recipe = _LoRARecipe(config, data, out, resume=resume, progress=progress, on_step=on_step, device=device,
                             warn_after_s=warn_after_s)
        recipe.setup()
        return recipe.run()


@dataclass
class _Totals:
    """Work done over the whole run, carried across a resume in the checkpoint (``totals``)."""

    train_seconds: float = 0.0
    supervised_tokens: int = 0
    tokens: int = 0


class _LoRARecipe:
    """One ``kefu train`` run, split as torchtune recipes are.

    ``setup`` (checks, model, data, optimiser, scheduler, resume, run record), ``train_step`` (one optimiser step
    over its micro-batches), ``save_checkpoint`` / ``_resume``, ``validation_loss``; ``run`` is the loop that ties
    them and writes the run folder through :class:`~kefu.artifacts.run.TrainRun`.
    """

    def __init__(self, config: TrainConfig, data: str | Path, out: str | Path, *, resume: bool, progress: bool,
                 on_step: Callable[[int, dict], None] | None, device: torch.device,
                 warn_after_s: float | None = None):
        self.config, self.data, self.resume, self.device = config, data, resume, device
        self.run_dir = TrainRun(out)
        self.progress, self.on_step = progress, on_step
        self.warn_after_s = warn_after_s if warn_after_s is not None else warn_after_default(device.type)
        self.time_estimate: dict[str, Any] | None = None
        self.started = time.time()
        self.start_step = 0
        self.totals = _Totals()

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Everything before the first step; whatever can fail on bad input fails before any long work."""
        if _launched_with_deepspeed():
            raise KefuError("kefu train does not run DeepSpeed (accelerate launch --use_deepspeed): its own loop "
                            "shards with FSDP2 instead, ZeRO-3-like: accelerate launch --use_fsdp ... or torchrun "
                            "... kefu train --fsdp (docs/models.md)")
        self.rank, self.world = _dist_setup()
        self.main = self.rank == 0
        self.fsdp = self.world > 1 and wants_fsdp(self.config)
        if self.fsdp and self.resume:
            raise KefuError("--fsdp runs write no mid-run checkpoints, so they cannot --resume")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.config.batch_size < self.world:
            raise KefuError(f"batch_size {self.config.batch_size} is smaller than the {self.world} processes")
        checkpoint = self._check_inputs()
        self._setup_model()
        self._setup_optimizer()
        if checkpoint is not None:
            self._resume(checkpoint)
        else:
            torch.manual_seed(self.config.seed + 1 + self.rank)  # dropout streams differ per process, repeat per run
        self._start_run_folder(resumed=checkpoint is not None)

    def _check_inputs(self) -> Path | None:
        """The checkpoint to resume from (None for a fresh run); KefuError for a bad --out, data or adapter."""
        config, run = self.config, self.run_dir
        checkpoint = run.latest_checkpoint() if self.resume else None
        if self.resume and checkpoint is None:
            raise KefuError(f"{run.path}: --resume given but there is no checkpoint in {run.checkpoints_dir}")
        if not self.resume and run.adapter_dir.exists():
            raise KefuError(f"{run.path}: already holds a finished run (adapter/); choose another --out or pass "
                            "--resume")
        check_data(self.data)  # malformed or empty data fails here, before the model is loaded
        self.model_path = resolve_on_rank0_first(config.model)
        if config.init_adapter and not is_adapter(config.init_adapter):
            raise KefuError(f"{config.init_adapter}: --init-adapter is not a PEFT adapter folder (no "
                            "adapter_config.json)")
        return checkpoint

    def _setup_model(self) -> None:
        """Base model, data, LoRA (fresh or ``--init-adapter``), the speed-ups, and the loss wrapper (DDP when
        distributed)."""
        from peft import PeftModel, get_peft_model  # deferred: heavy (torch, transformers)

        config, device = self.config, self.device
        self.precision = _precision(config, device)
        # bf16: frozen base weights stored in bf16 (half the memory traffic); PEFT keeps the LoRA weights in fp32
        model, self.tokenizer = load_model(str(self.model_path), trainable=True, device=device,
                                           dtype=torch.bfloat16 if self.precision == "bf16" else torch.float32)
        self.train_examples, self.val_examples, self.stats = load_examples(self.data, self.tokenizer, config)
        self.pad_id = self.tokenizer.pad_token_id
        if config.init_adapter:
            check_adapter(config.init_adapter, model)
            try:
                model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise KefuError(f"{config.init_adapter}: incompatible adapter for {self.model_path}: "
                                f"{str(exc).splitlines()[0][:300]}") from exc
        else:
            torch.manual_seed(config.seed)  # identical LoRA init on every process and in every rerun
            model = get_peft_model(model, lora_config(config, model))
        speed_up_lora(model, device, self.precision)
        gradient_checkpointing = config.gradient_checkpointing
        if gradient_checkpointing is None:
            gradient_checkpointing = device.type == "cuda"
        if gradient_checkpointing:
            model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        self.model, self.gradient_checkpointing = model, gradient_checkpointing

        # the filtered loss backward pays on CPU, where the output projection's matmuls are most of a step
        grad_floor = config.logit_grad_floor if device.type == "cpu" else 0.0
        self.wrapper: nn.Module = SupervisedLM(model, grad_floor=grad_floor).to(device)
        if config.compile:
            object.__setattr__(self.wrapper, "body", torch.compile(self.wrapper.body))
        self.ddp = None
        if self.fsdp:
            shard_model(self.wrapper)
        elif self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.wrapper, device_ids=[device.index] if device.type == "cuda" else None)

    def _setup_optimizer(self) -> None:
        """AdamW over the LoRA weights, cosine schedule with warm-up, and a grad scaler for fp16."""
        from transformers import get_cosine_schedule_with_warmup  # deferred: heavy (transformers)

        config = self.config
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.total_steps = config.max_steps or max(1, math.ceil(len(self.train_examples) * config.epochs
                                                                / config.batch_size))
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, round(config.warmup_ratio * self.total_steps),
                                                         self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def _start_run_folder(self, resumed: bool) -> None:
        """The run record and ``metrics.jsonl`` (main process), and the optional TensorBoard writer."""
        config, stats = self.config, self.stats
        record = {"train": config.model_dump(mode="json"), "data": {"path": str(Path(self.data).resolve()),
                  "sha256": stats.sha256, "files": stats.files}, "model_path": str(self.model_path),
                  "world_size": self.world, "fsdp": self.fsdp, "device": self.device.type,
                  "precision": self.precision, "gradient_checkpointing": self.gradient_checkpointing,
                  "versions": _versions(), "template": template_kind(self.tokenizer)}
        if self.main:
            self.run_dir.write_record(record)
            self.run_dir.start_metrics(self.start_step if resumed else None)
        self.writer = _tensorboard(self.run_dir.tensorboard_dir, config.tensorboard and self.main)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, step: int) -> Path:
        """``checkpoints/step-<step>``: the adapter plus optimiser, scheduler, scaler, RNG and totals (main only)."""
        with self.run_dir.writing_checkpoint(step, self.config.keep_checkpoints) as folder:
            self.model.save_pretrained(folder / ADAPTER_DIR)
            torch.save({"step": step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": _rng_state(),
                        "data_sha256": self.stats.sha256, "totals": asdict(self.totals)}, folder / STATE_FILE)
        return self.run_dir.checkpoints_dir / f"step-{step}"

    def _resume(self, checkpoint: Path) -> None:
        """Load a checkpoint's adapter, optimiser, scheduler, scaler, RNG and totals; it must be the same data."""
        from peft import set_peft_model_state_dict  # deferred: heavy (torch, transformers)
        from safetensors.torch import load_file

        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
        if state.get("data_sha256") != self.stats.sha256:
            raise KefuError(f"{checkpoint}: was trained on other data (sha256 {state.get('data_sha256')}, now "
                            f"{self.stats.sha256}); resume needs the same train.jsonl")
        set_peft_model_state_dict(self.model, load_file(str(checkpoint / ADAPTER_DIR / ADAPTER_WEIGHTS)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.start_step = state["step"]
        if "totals" in state:
            self.totals = _Totals(**state["totals"])
        log.info("resuming from %s (step %d)", checkpoint, self.start_step)

    # ------------------------------------------------------------------------------------------------ steps
    def train_step(self, step: int) -> tuple[dict[str, Any], float, float]:
        """One optimiser step over this process's share of the step's dialogues, gradient accumulated over its
        micro-batches; returns (metrics, loss, tokens per second)."""
        config, device, world = self.config, self.device, self.world
        t0 = time.perf_counter()
        # every process gets >= 1 dialogue (batch_size >= world), so every one joins the all-reduce
        indices = step_indices(len(self.train_examples), config.batch_size, step, config.seed)[self.rank::world]
        chosen = [self.train_examples[i] for i in indices]
        micro = _micro_batches(chosen, config, self.pad_id)
        real = len(micro)
        if self.fsdp:  # as many forward/backward passes as the busiest process, the extra ones weighted 0
            micro += micro[:1] * (_all_max(real, device) - real)
        local_sup = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro[:real])
        local_tok = sum(len(e.input_ids) for e in chosen)  # real tokens, padding excluded
        step_sup = _all_sum(local_sup, device)
        # all-reduce averages over processes; scale so the result is sum(loss) / step's supervised tokens
        scale = world / step_sup
        step_loss = 0.0
        ddp, scaler = self.ddp, self.scaler
        module = ddp or self.wrapper
        for index, batch in enumerate(micro):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last = index == len(micro) - 1
            sync = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
            if self.fsdp:
                module.set_requires_gradient_sync(last)
            with sync:
                with _autocast(self.precision, device):
                    loss_sum, _ = module(**batch)
                loss = loss_sum * (scale if index < real else 0.0)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if index < real:
                step_loss += float(loss_sum.detach())
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        step_loss = _all_sum(step_loss, device) / step_sup
        step_tok = _all_sum(local_tok, device)
        self.totals.train_seconds += seconds
        self.totals.supervised_tokens += int(step_sup)
        self.totals.tokens += int(step_tok)
        metrics = {"step": step + 1, "loss": round(step_loss, 6), "lr": lr, "supervised_tokens": int(step_sup),
                   "tokens": int(step_tok), "seconds": round(seconds, 4), "tokens_per_s": round(step_tok / seconds, 2),
                   "supervised_tokens_per_s": round(step_sup / seconds, 2)}
        return metrics, step_loss, step_tok / seconds

    def validation_loss(self) -> float | None:
        """Mean loss per supervised token over the validation split (each process its share)."""
        return evaluate_loss(self.wrapper, self.val_examples[self.rank::self.world], self.config, self.pad_id,
                             self.device, self.precision, filler=self.train_examples[0] if self.fsdp else None)

    def _log_step(self, step: int, metrics: dict[str, Any]) -> None:
        """metrics.jsonl, TensorBoard and the periodic checkpoint of step ``step`` (0-based; main process)."""
        config = self.config
        if (step + 1) % config.logging_steps == 0 or step + 1 == self.total_steps:
            self.run_dir.append_metrics(metrics)
        if self.writer is not None:
            for key in ("loss", "lr", "tokens_per_s", "val_loss"):
                if key in metrics and metrics[key] is not None:
                    self.writer.add_scalar(f"train/{key}", metrics[key], step + 1)
        if (config.save_steps and (step + 1) % config.save_steps == 0 and step + 1 < self.total_steps
                and not self.fsdp):  # a sharded optimiser state is not saved; the final adapter is
            self.save_checkpoint(step + 1)

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train from ``start_step`` to the end, then write the adapter and the report; returns the report."""
        config = self.config
        final_loss = None
        last_metrics: dict[str, Any] = {}
        self._seconds_before = self.totals.train_seconds  # a resumed run's earlier steps
        if self.main:
            self._estimate_before()
        timed: list[dict[str, Any]] = []
        with Progress(self.total_steps, "train", done=self.start_step, every_n=max(1, self.total_steps // 20),
                      every_s=30.0, enabled=self.progress and self.main) as bar:
            for step in range(self.start_step, self.total_steps):
                metrics, final_loss, tps = self.train_step(step)
                if self.main and len(timed) < 2:
                    timed.append(metrics)
                    self._estimate_measured(timed)
                if config.eval_steps and (step + 1) % config.eval_steps == 0 and self.val_examples:
                    metrics["val_loss"] = self.validation_loss()
                last_metrics = metrics
                if self.main:
                    self._log_step(step, metrics)
                if dist.is_initialized():
                    dist.barrier()
                bar.advance(info=f"loss {final_loss:.4f} {tps:,.0f} tok/s")
                if self.on_step is not None:
                    self.on_step(step + 1, metrics)
        val_loss = self.validation_loss() if self.val_examples else None
        report = self._report(final_loss, val_loss, last_metrics)
        adapter_state = full_adapter_state(self.model) if self.fsdp else None  # gathered by every process
        if self.main:
            self._finish(report, final_loss, adapter_state)
        if dist.is_initialized():
            dist.barrier()
        return report

    # ------------------------------------------------------------------------------------------------ estimate
    def _cost(self) -> Cost:
        """FLOPs per token and per supervised token of this model (``kefu.train.estimate``)."""
        embed = self.model.get_input_embeddings().weight
        body = sum(p.numel() for p in self.wrapper.body.parameters() if p is not embed)
        return Cost.of_shapes(body, self.wrapper.lm_head.weight.numel(), self.gradient_checkpointing)

    def _workload(self) -> Workload:
        stats = self.stats
        return Workload(len(self.train_examples), stats.tokens, stats.supervised_tokens,
                        self.total_steps - self.start_step, self.config.batch_size)

    def _say(self, lines: list[str]) -> None:
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _warn_if_long(self, est: dict[str, Any], cost: Cost, rate: float) -> bool:
        if est["seconds"] <= self.warn_after_s:
            return False
        work = self._workload()
        offers = suggestions(work, cost, rate, self.warn_after_s / 2, max_len=self.config.max_len,
                             last_turn=last_turn_workload(self.train_examples, work),
                             train_on_last=self.config.train_on == "last_assistant")
        self._say(warning_lines(est, self.warn_after_s, self.device.type, offers))
        self.time_estimate["warned"] = True
        self.time_estimate["suggestions"] = offers
        return True

    def _estimate_before(self) -> None:
        """Print the run's expected time from the device class's prior throughput (main process)."""
        cost, precision = self._cost(), self.precision
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        rate = prior_rate(self.device.type, precision, threads) * self.world
        where = f"{threads} thread{'s' if threads > 1 else ''}" if self.device.type == "cpu" else self.device.type
        if self.world > 1:
            where += f" x {self.world} processes"
        first = min(2, self.total_steps - self.start_step) + self.start_step
        source = f"prior for {self.device.type} {precision}, {where}; corrected after step {first}"
        est = estimate(self._workload(), cost, rate, source)
        self.time_estimate = {"before": est, "measured": None, "warn_after_s": self.warn_after_s, "warned": False,
                              "suggestions": []}
        self._say(estimate_lines(est))
        self._warn_if_long(est, cost, rate)

    def _estimate_measured(self, timed: list[dict[str, Any]]) -> None:
        """After the first step of a run of one, else after the second (the first carries one-off costs): the
        expected time from the throughput measured on it, printed with a warning if it is over the threshold."""
        remaining = self.total_steps - self.start_step
        if self.time_estimate is None or len(timed) < min(2, remaining):
            return
        step = timed[-1]
        cost = self._cost()
        rate = cost.flops(step["tokens"], step["supervised_tokens"]) / max(step["seconds"], 1e-9)
        est = estimate(self._workload(), cost, rate, f"measured on step {step['step']}")
        self.time_estimate["measured"] = est
        self._say([measured_line(est, self.time_estimate["before"])])
        self._warn_if_long(est, cost, rate)

    def _report(self, final_loss: float | None, val_loss: float | None, last_metrics: dict) -> dict[str, Any]:
        config, stats, totals = self.config, self.stats, self.totals
        seconds = totals.train_seconds
        return {
            "model": config.model, "model_path": str(self.model_path), "license": license_note(config.model),
            "data_sha256": stats.sha256, "data": stats.files, "steps": self.total_steps,
            "resumed_from_step": self.start_step or None, "final_loss": final_loss, "val_loss": val_loss,
            "train_seconds": round(seconds, 3), "wall_seconds": round(time.time() - self.started, 3),
            "supervised_tokens": totals.supervised_tokens, "tokens": totals.tokens,
            "tokens_per_s": round(totals.tokens / seconds, 2) if seconds else None,
            "supervised_tokens_per_s": round(totals.supervised_tokens / seconds, 2) if seconds else None,
            "dialogues": stats.dialogues, "examples": stats.examples, "split": stats.split,
            "truncated": stats.truncated, "skipped_no_agent": stats.skipped_no_agent, "data_tokens": stats.tokens,
            "data_supervised_tokens": stats.supervised_tokens, "world_size": self.world, "fsdp": self.fsdp,
            "device": self.device.type, "precision": self.precision, "last_metrics": last_metrics,
            "adapter": str(self.run_dir.adapter_dir),
            "grounding": stats.grounding,
            "time_estimate": None if self.time_estimate is None else {
                **self.time_estimate, "actual_train_seconds": round(seconds - self._seconds_before, 3),
                "actual_wall_seconds": round(time.time() - self.started, 3)},
        }

    def _finish(self, report: dict[str, Any], final_loss: float | None,
                adapter_state: dict[str, torch.Tensor] | None = None) -> None:
        """The adapter (from ``adapter_state`` when the model is sharded), the report and the audit record (main
        process)."""
        config, run = self.config, self.run_dir
        _write_adapter(self.model, self.tokenizer, config, run.adapter_dir, self.model_path, adapter_state)
        # the shop's past replies of this data: serving's retrieval tier and eval's baseline (about a second)
        ReplyIndex.from_data(self.data).save(run.replies_file)
        run.write_report(report)
        if self.writer is not None:
            self.writer.close()
        audit.record("train", str(run.path), digest=self.stats.sha256, details={
            "model": config.model, "steps": self.total_steps, "final_loss": final_loss,
            "adapter": str(run.adapter_dir), "init_adapter": config.init_adapter,
            "resumed_from_step": self.start_step or None})


def _write_adapter(model, tokenizer, config: TrainConfig, folder: Path, model_path: Path,
                   state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The PEFT adapter (``state_dict``: its weights, when the model's own are shards) plus ``kefu_adapter.json``
    (what eval and serve need to prompt it as it was trained) into ``folder``, a run's ``adapter/``, replaced
    atomically."""
    with TrainRun(folder.parent).writing_adapter() as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        adapter_config = json.loads((tmp / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = str(model_path)
        for key in ("target_modules", "target_parameters"):  # PEFT writes its sets in any order: sorted, a rerun
            if isinstance(adapter_config.get(key), list):      # writes the same file
                adapter_config[key] = sorted(adapter_config[key])
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
        (tmp / ADAPTER_INFO).write_text(json.dumps({
            "base_model": config.model, "base_model_path": str(model_path), "template": template_kind(tokenizer),
            "stop": stop_strings(tokenizer), "system_prompt": config.system_prompt,
            "facts_in_system": config.facts_in_system, "train_on": config.train_on,
            "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dora": config.use_dora,
                     "rslora": config.use_rslora}}, ensure_ascii=False, indent=2), encoding="utf-8")
