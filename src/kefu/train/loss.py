"""Summed cross entropy through a frozen output projection, without materialising the logits.

With Gemma's 262k-token vocabulary, ~900 supervised positions a step make 230M logits: 1 GB in fp32, then a
log-softmax output, its gradient and a zero-filled gradient buffer of the same size. Here the positions go through
the projection in chunks, and each chunk's softmax gives both the loss and the gradient at once (softmax minus
one-hot, projected back through the weight), the way Liger-Kernel's fused linear cross entropy does on GPU: one
exponential per logit instead of two, no full-size buffers, the same two matrix products as autograd. Backward only
scales the stored gradient. The projection must be frozen (LoRA never trains it); a trainable one takes the
plain path.

On CPU the backward product can skip most of the vocabulary (``grad_floor``, the trainer's default 2^-16, after
Cut Cross-Entropy's gradient filtering, Wijmans et al. 2024): the columns whose probability is below the floor in
every row of a chunk leave the product, and the mass they held is put on the mean output embedding, so that the
row still sums to zero (softmax is shift-invariant: the output embeddings' common direction cancels exactly).
On Gemma 3 270M with JDDC dialogues that keeps ~12% of the 262k columns and adds a gradient error about the size
of bf16's own rounding (0.2% of the gradient's norm); the loss itself is always exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 26  # logits per chunk (256 rows of a 262k vocabulary: 256 MB fp32)
_CHUNK_ELEMENTS_GPU = 1 << 28  # bf16/fp16 chunks on GPU (512 MB): wider matmuls, fewer launches and host syncs
_TINY = 1e-30  # below this the target's probability is recomputed as a log-softmax (no underflow to -inf)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``nn.Linear`` would compute in here: autocast's when it is on, else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _exact_terms(raw: torch.Tensor, target: torch.Tensor, tiny: torch.Tensor, softcap) -> torch.Tensor:
    """-log p(target) from the logits of the rows whose target probability underflowed (no log(0))."""
    logits = raw[tiny].float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return -torch.log_softmax(logits, dim=-1)[torch.arange(int(tiny.sum()), device=raw.device), target[tiny]]


def _half_path(dtype: torch.dtype, softcap) -> bool:
    """Chunks in bf16/fp16 without an fp32 copy (``_half_chunk``); soft-capping and fp32 take ``_fp32_chunk``."""
    return dtype in (torch.bfloat16, torch.float16) and not softcap


def _fp32_chunk(raw, target, at, softcap) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of one chunk and d loss / d logits (softmax - one-hot), in fp32. ``at``: each row's target as
    a position in the flattened chunk."""
    if softcap:
        capped = torch.tanh(raw.float() / softcap)
        probs = torch.softmax(capped * softcap, dim=-1)
    else:
        probs = torch.softmax(raw, dim=-1, dtype=torch.float32)
    flat = probs.view(-1)
    picked = flat[at]
    tiny = picked < _TINY
    if bool(tiny.any()):  # an improbable target: its exact log-probability, not log(0)
        loss = _exact_terms(raw, target, tiny, softcap).sum() - torch.log(picked[~tiny]).sum()
    else:
        loss = -torch.log(picked).sum()
    flat[at] -= 1.0
    if softcap:
        probs *= 1.0 - capped * capped
    return loss, probs


def _half_chunk(raw, target, at) -> tuple[torch.Tensor, torch.Tensor]:
    """The same for bf16/fp16 logits, without an fp32 copy of the chunk (~4x less time on CPU).

    The softmax is computed in fp32 and rounded once to the logits' dtype: the values the fp32 path would round
    for its matmul anyway. Only the target's entry needs more care: for a confident prediction p = 0.999 the
    rounded p - 1 would be off by up to 4x. Both it and the loss use the mass on the other tokens (the row's sum
    with the target's entry zeroed, accumulated in fp32), accurate to the dtype's relative precision (2^-8 for
    bf16): the loss is -log1p(-others) for confident targets, -log(p) otherwise.
    """
    probs = torch.softmax(raw, dim=-1)
    flat = probs.view(-1)
    picked = flat[at].float()
    flat[at] = 0.0
    others = probs.sum(dim=-1).float()  # accumulated in fp32, rounded once: relative precision of the dtype
    terms = torch.where(others < 0.5, -torch.log1p(-others.clamp(max=0.5)), -torch.log(picked.clamp(min=_TINY)))
    # below the dtype's normal range (fp16: 6e-5) a rounded probability keeps few bits: recompute those exactly
    tiny = picked < max(_TINY, torch.finfo(probs.dtype).smallest_normal)
    if bool(tiny.any()):
        terms[tiny] = _exact_terms(raw, target, tiny, None)
    flat[at] = (-others).to(probs.dtype)
    return terms.sum(), probs


_DENSE_SHARE = 0.5  # above this share of kept columns the plain product is cheaper than gathering


def _filtered_product(q, target, w, floor, w_mean) -> torch.Tensor:
    """``q @ w`` over the columns where some row of ``q`` reaches ``floor`` (and the rows' targets); each row's
    mass on the other columns is put on ``w_mean``, the mean row of ``w``."""
    cols = q.amax(dim=0) >= floor
    cols[target] = True  # the target's entry is negative (p - 1): amax does not see it
    idx = cols.nonzero().squeeze(1)
    if idx.numel() > _DENSE_SHARE * q.shape[1]:
        return q @ w
    kept = q.index_select(1, idx)
    left_out = -kept.sum(dim=1, dtype=torch.float32)  # a gradient row sums to zero: what the kept columns miss
    return (kept @ w.index_select(0, idx)).float().addr_(left_out, w_mean).to(q.dtype)


def _chunks(h, w, targets, softcap, chunk_rows, total, grad, floor=0.0, w_mean=None) -> None:
    """Add each chunk's summed loss to ``total`` and write its gradient rows into ``grad`` (when not None)."""
    half = _half_path(h.dtype, softcap)
    for start in range(0, h.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        target = targets[rows]
        raw = h[rows] @ w.t()
        # flat positions of the targets: on CPU, 2-d indexing and scatter_ read or copy the whole chunk
        at = torch.arange(target.shape[0], device=h.device) * raw.shape[1] + target
        chunk_loss, probs = _half_chunk(raw, target, at) if half else _fp32_chunk(raw, target, at, softcap)
        total += chunk_loss
        if grad is None:
            continue
        if floor and half:
            grad[rows] = _filtered_product(probs, target, w, floor, w_mean)
        else:
            grad[rows] = probs.to(h.dtype) @ w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk_rows, dtype, floor, w_mean):
        w = weight.to(dtype)
        h = hidden.to(dtype)
        need_grad = ctx.needs_input_grad[0]
        if need_grad and floor and _half_path(dtype, softcap) and w_mean is None:
            w_mean = output_mean(weight)
        grad = torch.empty_like(h) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are chosen here (autocast's softmax is fp32)
            _chunks(h, w, targets, softcap, chunk_rows, total, grad, floor, w_mean)
        ctx.save_for_backward(grad if need_grad else torch.empty(0))
        ctx.hidden_dtype = hidden.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output).to(ctx.hidden_dtype), None, None, None, None, None, None, None


def output_mean(weight: torch.Tensor) -> torch.Tensor:
    """The mean row of an output projection in fp32 (for ``grad_floor``; worth keeping: ~0.3 s for Gemma's)."""
    return weight.detach().float().mean(dim=0)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         softcap: float | None = None, chunk_rows: int | None = None, grad_floor: float = 0.0,
                         weight_mean: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i CE(softcap(hidden_i @ weight.T), targets_i)`` in fp32, the logits computed in chunks and dropped.

    ``hidden`` (n, d), ``weight`` (vocab, d), ``targets`` (n,). Equal to ``F.cross_entropy(lm_head(hidden).float(),
    targets, reduction="sum")`` with the same matmul precision; gradients flow to ``hidden`` only.
    ``grad_floor`` > 0 filters the backward product of bf16/fp16 chunks (module docstring); ``weight_mean``:
    ``output_mean(weight)`` when the caller keeps it.
    """
    if not 0.0 <= grad_floor < 1.0:
        raise ValueError(f"grad_floor must be in [0, 1), got {grad_floor}")
    if weight.requires_grad:  # a trained projection needs its own gradient: plain autograd
        logits = F.linear(hidden, weight).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits, targets, reduction="sum")
    if hidden.shape[0] == 0:
        return hidden.float().sum() * 0.0  # keeps the graph connected (DDP) with a zero loss
    dtype = _compute_dtype(hidden, weight)
    half = _half_path(dtype, softcap)
    elements = _CHUNK_ELEMENTS_GPU if hidden.is_cuda and half else _CHUNK_ELEMENTS  # fp32 keeps ~4 such buffers
    rows = chunk_rows or max(1, elements // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, targets, softcap, rows, dtype, grad_floor, weight_mean)
