"""Attention over packed training rows, one dialogue at a time.

A packed row holds several dialogues whose position ids restart at 0. transformers turns that into a row x row
block-diagonal mask, and SDPA with an explicit mask computes every block, masked or not: with four dialogues in a
1,024-token row about 7/8 of the attention work is thrown away (3/4 off the diagonal blocks, half of what is left
above the causal diagonal). Here each dialogue goes through SDPA's causal kernel on its own slice of the row, which
skips both; a dialogue longer than a sliding-window layer's window gets that layer's band mask on its slice only.
The result equals the masked computation (tests/train/test_packing.py).

``use_packed_attention(model)`` registers this as transformers attention implementation ``"kefu_packed"`` for
a model that uses SDPA (eager, flash-attention and flex keep theirs: flash-attention already runs packed rows as
variable-length sequences). Callers then pass ``kefu_segments=row_segments(position_ids)`` to the model's forward;
transformers forwards unknown keyword arguments down to the attention function. Calls without segments are plain
SDPA, so a switched model still generates correctly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "kefu_packed"


def row_segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """``[(start, end), ...]`` per row: a new dialogue (or a padding tail) starts wherever the position is 0."""
    out = []
    width = position_ids.shape[1]
    for row in position_ids:
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0] + starts
        out.append(list(zip(starts, starts[1:] + [width])))
    return out


def _band_mask(n: int, window: int, device) -> torch.Tensor:
    """Causal mask of a sliding-window layer: query i sees keys j with i - window < j <= i (transformers' rule)."""
    i = torch.arange(n, device=device)
    return (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)


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
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # repeating K/V measured faster than SDPA's enable_gqa on CPU
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    rows = []
    for r, row in enumerate(kefu_segments):
        parts = []
        for start, end in row:
            q, k, v = query[r:r + 1, :, start:end], key[r:r + 1, :, start:end], value[r:r + 1, :, start:end]
            n = end - start
            if sliding_window is not None and n > sliding_window:
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
