"""LoRA's update added inside one matrix product: ``addmm(W x, A x, B^T, alpha=scaling)``.

PEFT computes ``result + lora_B(lora_A(dropout(x))) * scaling``: the low-rank product is written out at the full
width of the layer's output, scaled in a second pass and added in a third, and backward mirrors the scaling. For a
7B model's gate/up projections that output is 8,192 x 18,944 per packed row, and over all seven LoRA layers of
all 28 layers these passes move about as many bytes as the frozen weights' matrix products do. ``addmm`` does
the scaling and the addition in the matrix product's epilogue and passes the gradient of ``W x`` through untouched.
Numbers are PEFT's up to rounding (tests/train/test_fastlora.py): the sum is rounded once instead of three times.

Only plain LoRA on an ``nn.Linear`` with one active adapter takes this path; DoRA, merged or disabled adapters,
mixed-adapter batches, a trained LoRA bias, and a dtype mix that only autocast could reconcile go through PEFT's
own forward. Hook-based tools that expect ``lora_B`` to be called (Opacus) must not use it.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    names = layer.active_adapters
    name = names[0] if len(names) == 1 else None
    if (args or kwargs or layer.merged or layer.disable_adapters or name is None or name not in layer.lora_A
            or name in layer.lora_variant or layer.lora_B[name].bias is not None):
        return type(layer).forward(layer, x, *args, **kwargs)
    lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
    result = layer.base_layer(x)
    low = lora_a(layer.lora_dropout[name](layer._cast_input_dtype(x, lora_a.weight.dtype)))
    if not torch.is_autocast_enabled(x.device.type) and not (result.dtype == low.dtype == lora_b.weight.dtype):
        return (result + lora_b(low) * layer.scaling[name]).to(result.dtype)  # PEFT's arithmetic, no addmm
    width = result.shape[-1]
    out = torch.addmm(result.reshape(-1, width), low.reshape(-1, low.shape[-1]), lora_b.weight.t(),
                      alpha=layer.scaling[name])
    return out.view(result.shape).to(result.dtype)


def use_fused_lora(model: nn.Module) -> int:
    """Give every PEFT ``lora.Linear`` in ``model`` the fused forward; returns how many layers."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear:
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
