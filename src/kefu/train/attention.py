"""Attention over packed training rows, one dialogue at a time.

A packed row holds several dialogues whose position ids restart at 0. transformers turns that into a row x row
block-diagonal mask, and SDPA with an explicit mask computes every block, masked or not: with four dialogues in a
1,024-token row about 7/8 of the attention work is thrown away (3/4 off the diagonal blocks, half of what is left
above the causal diagonal). Here each dialogue goes through SDPA's causal kernel on its own slice of the row, which
skips both; a dialogue longer than a sliding-window layer's window gets that layer's band mask on its slice only.
On CPU in bf16 each dialogue uses transformers' eager arithmetic instead (bf16 scores, fp32 softmax), which runs
faster there than SDPA's kernel. The result equals the masked computation (tests/train/test_packing.py).

``use_packed_attention(model)`` registers this as transformers attention implementation ``"kefu_packed"`` for
a model that uses SDPA (eager, flash-attention and flex keep theirs: flash-attention already runs packed rows as
variable-length sequences). Callers then pass ``kefu_segments=row_segments(position_ids)`` to the model's forward;
transformers forwards unknown keyword arguments down to the attention function. Calls without segments are plain
SDPA, so a switched model still generates correctly.

On a GPU, with bf16/fp16 activations, the whole micro-batch goes through one variable-length flash-attention call
(``torch.nn.attention.varlen``, cumulative sequence offsets instead of a Python loop over dialogues): with ~30
dialogues per 8k-token row and 28 layers, the loop's kernel launches alone would cost more than the attention.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "kefu_packed"


def cu_seqlens(segments: list[list[tuple[int, int]]], width: int, device) -> tuple[torch.Tensor, int]:
    """Cumulative offsets (int32, ``n_segments + 1``) of every segment of the flattened ``(rows * width)`` batch,
    and the longest segment: the layout variable-length attention kernels take."""
    bounds = [0]
    longest = 0
    for r, row in enumerate(segments):
        for start, end in row:
            bounds.append(r * width + end)
            longest = max(longest, end - start)
    return torch.tensor(bounds, dtype=torch.int32, device=device), longest


class Segments(list):
    """``[(start, end), ...]`` per row of one packed batch. Every layer of a forward gets the same object, so the
    variable-length offsets are built once per forward (and again only for another width or device)."""

    def offsets(self, width: int, device) -> tuple[torch.Tensor, int]:
        key = (width, torch.device(device))
        cached = self.__dict__.get("_offsets")
        if cached is None or cached[0] != key:
            cached = self._offsets = (key, cu_seqlens(self, width, device))
        return cached[1]


def row_segments(position_ids: torch.Tensor) -> Segments:
    """``[(start, end), ...]`` per row: a new dialogue (or a padding tail) starts wherever the position is 0."""
    out = Segments()
    width = position_ids.shape[1]
    for row in position_ids:
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0] + starts
        out.append(list(zip(starts, starts[1:] + [width])))
    return out


@functools.cache
def _varlen_kernel():
    """``(varlen_attn, takes_window, takes_gqa)`` from this torch, or None where it has no variable-length API.

    torch 2.10 spells causality ``is_causal=True``; later versions ``window_size=(-1, 0)`` and take ``enable_gqa``.
    """
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    return varlen_attn, "window_size" in params, "enable_gqa" in params


@functools.cache
def _flash_capable(device_index: int) -> bool:
    """Flash attention needs an Ampere or newer NVIDIA GPU (bf16 is emulated on older cards, flash is not)."""
    return torch.version.hip is None and torch.cuda.get_device_capability(device_index) >= (8, 0)


_LOOP_ONLY: ContextVar[bool] = ContextVar("kefu_packed_loop_only", default=False)


@contextmanager
def per_dialogue_loop() -> Iterator[None]:
    """Within the block packed rows take the per-dialogue loop even where the variable-length kernel could run:
    to compare the two on one GPU (tests/train/test_gpu.py, bench/gpu_train.py)."""
    token = _LOOP_ONLY.set(True)
    try:
        yield
    finally:
        _LOOP_ONLY.reset(token)


def varlen_available(query: torch.Tensor, dropout: float, sliding_window: int | None) -> bool:
    """Whether this call can take the single variable-length flash-attention kernel (CUDA, half precision)."""
    kernel = _varlen_kernel()
    return (not _LOOP_ONLY.get() and kernel is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
            and not dropout and (sliding_window is None or kernel[1]) and query.shape[-1] <= 256
            and _flash_capable(query.device.index if query.device.index is not None else 0))


def varlen_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     segments: list[list[tuple[int, int]]], scaling: float | None,
                     sliding_window: int | None, kernel=None) -> torch.Tensor:
    """Causal attention within each segment of every row, in one variable-length call.

    ``query`` (batch, heads, length, dim), ``key``/``value`` (batch, kv_heads, length, dim); returns (batch, length,
    heads, dim), the layout transformers expects back. ``kernel`` replaces torch's ``varlen_attn`` (tests).
    """
    batch, heads, width, dim = query.shape
    varlen_attn, takes_window, takes_gqa = kernel or _varlen_kernel()
    segments = segments if isinstance(segments, Segments) else Segments(segments)
    cu, longest = segments.offsets(width, query.device)
    if key.shape[1] != heads and not takes_gqa:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    flat = [t.transpose(1, 2).reshape(batch * width, t.shape[1], dim) for t in (query, key, value)]
    options = {"scale": scaling}
    if takes_window:  # transformers' window w: a query sees itself and the w - 1 keys before it
        options["window_size"] = (-1 if sliding_window is None else sliding_window - 1, 0)
    else:
        options["is_causal"] = True
    if key.shape[1] != heads:
        options["enable_gqa"] = True
    out = varlen_attn(*flat, cu, cu, longest, longest, **options)
    return out.view(batch, width, heads, dim)


def _band_mask(n: int, window: int, device) -> torch.Tensor:
    """Causal mask of a sliding-window layer: query i sees keys j with i - window < j <= i (transformers' rule)."""
    i = torch.arange(n, device=device)
    return (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)


@functools.lru_cache(maxsize=32)  # n x n bytes each: 32 MB for 1,024-token dialogues
def _hidden_keys(n: int, window: int | None) -> torch.Tensor:
    """CPU bool mask of the keys a query may not see: later ones, and those outside a sliding window."""
    return ~_band_mask(n, window if window is not None else n, "cpu")


_QUERY_BLOCK = 256  # about this many queries per block of the CPU eager path (measured: below ~380 one block is faster)


def _eager_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float | None,
                  window: int | None, block: int = _QUERY_BLOCK) -> torch.Tensor:
    """transformers' eager attention arithmetic on one dialogue: half-precision scores, softmax in fp32.

    On CPU in bf16 this is ~1.5x faster (forward + backward) than SDPA's flash kernel for dialogues of 100-600
    tokens, because the two products run as bf16 GEMMs; in fp32 it is not faster, so fp32 keeps SDPA.
    Queries go in ~``block``-sized blocks, each against the keys it can see (none after its last query, none before
    its first query's window): two blocks skip a quarter of the products and of the softmax that one causal block
    computes and masks. Each query row's numbers are the single block's up to rounding. Forward + backward on 2 cores:
    460 tokens 14.0 -> 10.4 ms, 1,000 tokens (window 512) 65 -> 32 ms.
    """
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    n = q.shape[2]
    hidden = _hidden_keys(n, window)
    size = max(1, -(-n // max(1, round(n / block))))
    parts = []
    for start in range(0, n, size):
        end = min(n, start + size)
        low = max(0, start - window + 1) if window is not None else 0
        scores = torch.matmul(q[:, :, start:end], k[:, :, low:end].transpose(-1, -2)) * scale
        scores = scores.masked_fill(hidden[start:end, low:end], float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        parts.append(torch.matmul(probs, v[:, :, low:end]))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


@torch.compiler.disable  # under torch.compile: a graph break, not a graph specialised on every batch's segments
def packed_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     sliding_window: int | None = None, kefu_segments: list[list[tuple[int, int]]] | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: ``query`` (batch, heads, length, dim), ``key``/``value`` with
    ``num_key_value_heads``; returns (batch, length, heads, dim). Without ``kefu_segments`` (generation, or any
    other call of a switched model) it is plain SDPA with the mask transformers built."""
    if kefu_segments is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    if varlen_available(query, dropout, sliding_window):
        return varlen_attention(query, key, value, kefu_segments, scaling, sliding_window), None
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # repeating K/V measured faster than SDPA's enable_gqa on CPU
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    eager = query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16) and not dropout
    rows = []
    for r, row in enumerate(kefu_segments):
        parts = []
        for start, end in row:
            q, k, v = query[r:r + 1, :, start:end], key[r:r + 1, :, start:end], value[r:r + 1, :, start:end]
            n = end - start
            if eager:
                parts.append(_eager_causal(q, k, v, scaling, sliding_window if sliding_window and
                                           n > sliding_window else None))
            elif sliding_window is not None and n > sliding_window:
                parts.append(F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(n, sliding_window, q.device),
                                                            dropout_p=dropout, scale=scaling))
            else:
                parts.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout,
                                                            scale=scaling))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def use_packed_attention(model) -> bool:
    """Switch ``model`` (a transformers causal LM or its decoder) from SDPA to per-dialogue attention.

    Returns whether it did: only SDPA models are switched, since eager may carry attention soft-capping (Gemma 2)
    and the flash-attention/flex implementations handle packed rows themselves.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = model.config
    if getattr(config, "_attn_implementation", None) == PACKED_ATTENTION:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    # transformers still builds SDPA's masks for calls without segments (a padded generate on the same model)
    AttentionMaskInterface.register(PACKED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    for sub in model.modules():  # the decoder and its layers may hold their own config object
        sub_config = getattr(sub, "config", None)
        if sub_config is not None and getattr(sub_config, "_attn_implementation", None) == "sdpa":
            sub_config._attn_implementation = PACKED_ATTENTION
    return True
