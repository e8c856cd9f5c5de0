"""LoRA dropout with cheaper random numbers on CPU.

PEFT drops out the input of every LoRA layer (7 per Gemma block). On CPU, ``nn.Dropout`` draws one Bernoulli
sample per element and that random-number generation dominates: measured 5.4 ms forward + backward for a
962 x 640 bf16 input on 2 cores, about 1.4 s of a ~10 s Gemma 3 270M step. ``BitsDropout`` draws 64-bit random
integers and uses each as four 16-bit uniforms: the same keep/drop distribution with the probability rounded to a
multiple of 1/65536 (0.1 becomes 0.100006), 2.3 ms for the same input. GPUs keep ``nn.Dropout`` (their Philox
generator is not the bottleneck).
"""

from __future__ import annotations

import torch
from torch import nn


class BitsDropout(nn.Module):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # keep an element when its 16-bit uniform, read as a signed int16, is at least this
        self.threshold = round(p * 65536) - 32768
        self.scale = 1.0 / (1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * (keep * self.scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_bits_dropout(model: nn.Module) -> int:
    """Replace the ``nn.Dropout`` of every PEFT LoRA layer in ``model`` by ``BitsDropout``; returns how many."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                dropouts[name] = BitsDropout(dropout.p)
                replaced += 1
    return replaced
