"""Weight-only INT8 for CPU decoding: per-output-channel symmetric int8 weights, bf16 activations.

Why: decoding one token reads every weight once, so on CPU a decode step is bound by memory bandwidth; int8 weights
are a quarter of fp32's bytes, and torch's ``_weight_int8pack_mm`` kernel (the one gpt-fast and torchao use on CPU)
multiplies bf16 activations by them without materialising a float copy. Activations stay floating point — unlike
``torch.ao`` dynamic quantisation, which also quantises activations per tensor and breaks models with activation
outliers (Gemma 3 keeps ~5% of its greedy tokens under it). Long inputs (prefill, many rows) take a
dequantise-then-bf16-GEMM path instead, where that kernel is slower than a dense bf16 matmul.

LoRA adapters still load on top: :class:`Int8Linear` is an ``nn.Linear`` (int8 ``weight``, not trainable), so PEFT
wraps it like any linear layer and adds the adapter's low-rank update in floating point. When the output projection
is quantised, the model's config stops tying it to the input embedding, so a later ``tie_weights`` cannot swap the
float embedding matrix into the int8 kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_LAYERS = "lora_"  # PEFT's own small layers (lora_A, lora_B ...) stay floating point
ALWAYS = 1 << 62  # ``small_batch`` for a layer that always takes the int8 kernel


class Int8Linear(nn.Linear):
    """``y = x @ (q * scale).T + b`` with ``q`` int8 per output row and ``scale`` bf16; ``x`` keeps its dtype.

    ``small_batch``: inputs with at most this many rows (decode steps of a batch) use the int8 kernel; larger ones
    (prefill) use a dense bf16 GEMM, over a bf16 copy kept for it when ``prefill_copy`` (twice the int8 bytes; saves
    dequantising every layer on every prefill, a quarter of a 300-token prefill on a 2-core CPU), else dequantised
    per call.
    """

    def __init__(self, linear: nn.Linear, *, small_batch: int = 16, prefill_copy: bool = False):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.small_batch = linear.in_features, linear.out_features, small_batch
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
        q = torch.round(weight / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
        self.weight = nn.Parameter(q, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("prefill_weight", self.dequantized() if prefill_copy else None, persistent=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized(self, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return self.weight.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if rows.shape[0] <= self.small_batch and rows.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.weight_scale)
        else:
            y = F.linear(rows, self.prefill_weight if self.prefill_weight is not None else self.dequantized())
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, bf16 scales"


def quantize_int8_weights(model: nn.Module, *, head: bool = False, small_batch: int = 16,
                          prefill_copy: bool = False) -> int:
    """Replace, in place, every ``nn.Linear`` of ``model`` (adapter layers excepted) by an :class:`Int8Linear`;
    returns how many were replaced. Embeddings and norms stay as they are; the output projection too unless
    ``head`` (it becomes an untied int8 copy; a vocabulary trim's head is not an ``nn.Linear`` and is never touched).
    ``prefill_copy``: keep a bf16 copy of each matrix for long inputs (serving: faster prefill for more memory)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    replaced, untie = 0, False
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            is_head = child is output
            if type(child) is not nn.Linear or ADAPTER_LAYERS in f"{parent_name}.{name}" or (is_head and not head):
                continue
            # the output projection sees few rows (last positions, or a decode step's drafts) and has no bf16 copy:
            # the int8 kernel at any row count beats dequantising 262k x 640 weights per call (40 rows: 186 vs 277 ms)
            setattr(parent, name, Int8Linear(child, small_batch=ALWAYS if is_head else small_batch,
                                             prefill_copy=prefill_copy and not is_head))
            replaced += 1
            untie = untie or is_head
    config = getattr(model, "config", None)
    if untie and config is not None:  # the int8 head is its own copy from now on
        for cfg in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
            cfg.tie_word_embeddings = False
    return replaced
