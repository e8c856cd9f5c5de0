"""Exact and near-duplicate detection across dialogues.

Exact: a 128-bit BLAKE2b digest of the cleaned messages. Near: MinHash signatures over character shingles
(computed with numpy, vectorised: one multiply-shift hash family, no Python loop per shingle), indexed by LSH
banding with datasketch's optimal band/row choice for the configured Jaccard threshold. A candidate counts as a
duplicate only when its estimated Jaccard similarity reaches the threshold.

Signatures are computed in worker processes (:func:`fingerprint`); the index lives in the parent and sees
dialogues in input order, so the first occurrence is the one kept, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from kefu.types import Turn

_NON_WORD = re.compile(r"[\W_]+")
_MASK32 = np.uint64(0xFFFFFFFF)


def exact_key(turns: list[Turn]) -> bytes:
    """Digest of the cleaned messages (roles included)."""
    h = hashlib.blake2b(digest_size=16)
    for turn in turns:
        h.update(turn.role.encode())
        h.update(b"\x1f")
        h.update(turn.content.encode("utf-8"))
        h.update(b"\x1e")
    return h.digest()


class MinHasher:
    """MinHash over character k-shingles of a text with punctuation and whitespace removed."""

    def __init__(self, num_perm: int = 64, shingle: int = 3, seed: int = 1):
        rng = np.random.RandomState(seed)
        self.num_perm, self.shingle = num_perm, shingle
        self.a = (rng.randint(1, 2**31, size=num_perm, dtype=np.int64).astype(np.uint64) << np.uint64(32)) \
            | rng.randint(0, 2**31, size=num_perm, dtype=np.int64).astype(np.uint64) | np.uint64(1)
        self.b = rng.randint(0, 2**31, size=num_perm, dtype=np.int64).astype(np.uint64) << np.uint64(16)

    def signature(self, text: str) -> np.ndarray:
        """uint32 array of ``num_perm`` minimum hash values."""
        text = _NON_WORD.sub("", text) or text or " "
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        k = min(self.shingle, len(cps))
        n = len(cps) - k + 1
        h = cps[:n].copy()
        for j in range(1, k):
            h = h * np.uint64(1000003) + cps[j:n + j]
        h = (h ^ (h >> np.uint64(29))) & _MASK32  # repeated shingles do not change the minimum: no unique()
        # multiply-shift hashing: ((a * x + b) mod 2^64) >> 32 is a universal family; the min over shingles per row
        # (shifting after the min is the same: the shift is monotone)
        return ((np.multiply.outer(h, self.a) + self.b).min(axis=0) >> np.uint64(32)).astype(np.uint32)


def shingle_text(turns: list[Turn]) -> str:
    return "\n".join(t.content for t in turns if t.role != "system")


class NearDuplicateIndex:
    """LSH banding over MinHash signatures; ``add(sig)`` returns True when a near duplicate was already indexed."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 64):
        self.threshold = threshold
        self.num_perm = num_perm
        from datasketch.lsh import _optimal_param  # imports scipy (0.5 s): only the parent needs it

        self.bands, self.rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
        self.tables: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._chunks: list[np.ndarray] = []
        self._chunk = 65536
        self.size = 0

    def _sig(self, index: int) -> np.ndarray:
        return self._chunks[index // self._chunk][index % self._chunk]

    def add(self, sig: np.ndarray) -> bool:
        """Index ``sig`` unless a near duplicate is already there; return whether it was a duplicate."""
        keys = [hash(sig[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        seen: set[int] = set()
        for table, key in zip(self.tables, keys):
            bucket = table.get(key)
            if bucket is None:
                continue
            for other in (bucket,) if isinstance(bucket, int) else bucket:
                if other in seen:
                    continue
                seen.add(other)
                if float(np.count_nonzero(self._sig(other) == sig)) / self.num_perm >= self.threshold:
                    return True
        index = self.size
        if index % self._chunk == 0:
            self._chunks.append(np.empty((self._chunk, self.num_perm), dtype=np.uint32))
        self._chunks[-1][index % self._chunk] = sig
        self.size += 1
        for table, key in zip(self.tables, keys):
            bucket = table.get(key)
            if bucket is None:
                table[key] = index  # most buckets hold one dialogue: a bare int keeps memory low
            elif isinstance(bucket, int):
                table[key] = [bucket, index]
            elif len(bucket) < 32:  # cap: templated chats can share a band with thousands of others
                bucket.append(index)
        return False


class Deduplicator:
    """Both checks, in input order. ``check(exact, sig)`` -> None (new), ``"exact"`` or ``"near"``."""

    def __init__(self, exact: bool = True, near: bool = True, threshold: float = 0.85, num_perm: int = 64):
        self.exact, self.near = exact, near
        self._seen: set[bytes] = set()
        self._index = NearDuplicateIndex(threshold, num_perm) if near else None

    def check(self, exact: bytes, sig: np.ndarray | None) -> str | None:
        if self.exact:
            if exact in self._seen:
                return "exact"
            self._seen.add(exact)
        if self._index is not None and sig is not None and self._index.add(sig):
            return "near"
        return None
