"""The KV cache of the rows a local engine is decoding together, and its attention mask."""

from __future__ import annotations


class KVBatch:
    """The active rows' KV cache, left-padded to a common length, and its attention mask.

    A new row is prefilled alone and joins by left-padding (the shorter side) along the sequence axis; finished rows
    are dropped and padding every row shares is cut, so the cache stays as short as the longest live row. Position
    ids are per row, so a row's logits do not depend on its neighbours (the same left-padding ``generate`` uses).
    """

    def __init__(self, torch):
        self.torch = torch
        self.cache = None
        self.mask = None  # [rows, length], 1 = real token

    def add(self, cache, mask) -> None:
        """Join rows prefilled together: their cache and [rows, length] mask (0 = left padding)."""
        torch = self.torch
        length = mask.shape[1]
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        have = self.mask.shape[1]
        target = max(have, length)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, target), _left_pad(theirs.keys, target)])
            mine.values = torch.cat([_left_pad(mine.values, target), _left_pad(theirs.values, target)])
        self.mask = torch.cat([_left_pad(self.mask, target), _left_pad(mask, target)])

    def extend_mask(self, width: int = 1):
        self.mask = self.torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], width)], dim=1)
        return self.mask

    def drop_last(self, counts: list[int]) -> None:
        """Remove each row's last ``counts[row]`` cache entries (rejected draft tokens). Rows are re-aligned to the
        right, the freed columns becoming left padding, so every row's tokens stay contiguous: relative distances,
        which sliding-window masks depend on, are those of the one-token-per-step cache."""
        torch = self.torch
        if not any(counts):
            return
        common = min(counts)
        if common:  # what every row drops: cut it
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, :-common], layer.values[:, :, :-common]
            self.mask = self.mask[:, :-common]
            counts = [c - common for c in counts]
        if any(counts):
            length = self.mask.shape[1]
            # column j of row r comes from column j - counts[r]; columns before that are padding
            source = (torch.arange(length)[None, :] - torch.tensor(counts)[:, None])
            valid = source >= 0
            source = source.clamp(min=0)
            self.mask = torch.where(valid, self.mask.gather(1, source), 0)
            for layer in self.cache.layers:
                index = source[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
                layer.keys = layer.keys.gather(2, index)
                layer.values = layer.values.gather(2, index)
        self._cut_shared_padding()

    def select(self, rows: list[int]) -> None:
        if not rows:
            self.cache = self.mask = None
            return
        index = self.torch.tensor(rows)
        self.mask = self.mask.index_select(0, index)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        self._cut_shared_padding()

    def _cut_shared_padding(self) -> None:
        """Drop the leading columns that are padding in every row (views, no copy)."""
        start = int(self.mask.any(0).long().argmax())
        if start:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]


def _left_pad(tensor, length: int):
    """Zero-pad ``tensor`` on the left of its sequence axis (-2 for [b, h, t, d] caches, -1 for [b, t] masks)."""
    import torch.nn.functional as F

    axis_len = tensor.shape[-2] if tensor.dim() == 4 else tensor.shape[-1]
    if axis_len == length:
        return tensor
    pad = length - axis_len
    return F.pad(tensor, (0, 0, pad, 0)) if tensor.dim() == 4 else F.pad(tensor, (pad, 0))
