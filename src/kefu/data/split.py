"""Deterministic train/val/test assignment by dialogue: a keyed hash of the dialogue's content digest.

Hash-based, so the split of a dialogue depends only on its content and the seed, never on input order or on which
other dialogues are present; a dialogue can never land in two splits.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def unit_interval(key: bytes, seed: int, salt: bytes = b"split") -> float:
    """A number in [0, 1) that is a stable function of (key, seed, salt)."""
    digest = hashlib.blake2b(key, digest_size=8, key=salt + b":" + str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(key: bytes, seed: int, val_ratio: float, test_ratio: float) -> str:
    """``test`` for the first ``test_ratio`` of the hash range, then ``val``, else ``train``."""
    u = unit_interval(key, seed)
    if u < test_ratio:
        return "test"
    if u < test_ratio + val_ratio:
        return "val"
    return "train"
