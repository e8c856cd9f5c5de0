"""glibc heap settings for long-running CPU work: what happens to large freed tensors.

By default glibc serves every allocation over 128 KB (rising up to 32 MB as such blocks are freed) with a fresh
``mmap`` and unmaps it on free, and trims the heap's free top. A CPU training step allocates and frees the same
large activations again and again (Gemma 3 270M: ~1.1 million page faults per step of 16 JDDC dialogues, each a
zeroed 4 KB page), so ``keep_large_allocations`` lets the heap serve and keep them (PyTorch's CPU tuning guides
reach the same end with jemalloc or tcmalloc). The server does the opposite when idle (``release_freed_memory``),
so that its RSS shows leaks rather than its busiest moment. Both are no-ops without glibc (musl, macOS).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

_LIBC: Any = None  # the C library once loaded; False where it has no glibc malloc
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_SETTLED_MMAP_THRESHOLD = 32 << 20  # where glibc's self-adjusting mmap threshold stops on 64-bit (trim: twice that)
_INT_MAX = 2 ** 31 - 1


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _LIBC = libc
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def release_freed_memory() -> int:
    """glibc's ``malloc_trim(0)``: hand freed heap pages back to the OS; 1 if it ran, 0 where there is no glibc."""
    libc = _libc()
    if not libc:
        return 0
    libc.malloc_trim(0)
    return 1


def keep_large_allocations(limit: int = 1 << 30) -> int:  # glibc takes an int: at most 2 GB - 1
    """Serve allocations up to ``limit`` bytes from the heap and keep up to twice that much freed memory there.

    Some glibc versions refuse an mmap threshold above 32 MB; then 32 MB is used. Returns the threshold that took
    (0: none, no glibc). Note that any setting ends glibc's self-adjusting threshold for the process.
    """
    libc = _libc()
    if not libc:
        return 0
    for threshold in (limit, min(limit, _SETTLED_MMAP_THRESHOLD)):
        if libc.mallopt(_M_MMAP_THRESHOLD, threshold):
            libc.mallopt(_M_TRIM_THRESHOLD, min(2 * threshold, _INT_MAX))
            return threshold
    return 0


_nesting = {"depth": 0, "threshold": 0}  # open large_allocations_kept blocks, and what the outermost one set
_nesting_lock = threading.Lock()


@contextmanager
def large_allocations_kept(enabled: bool = True) -> Iterator[bool]:
    """``keep_large_allocations`` for the duration of the block. On leaving the outermost block the thresholds go
    to the values glibc's own adjustment settles at on 64-bit (mmap 32 MB, trim 64 MB; its automatic adjustment
    cannot be switched back on) and the kept memory is handed back, so a long-lived process (the demo, the retrain
    loop) does not stay at the block's peak. Yields whether the settings took. The settings are process-wide."""
    if not enabled:
        yield False
        return
    with _nesting_lock:
        if _nesting["depth"] == 0:
            _nesting["threshold"] = keep_large_allocations()
        _nesting["depth"] += 1
        took = bool(_nesting["threshold"])
    try:
        yield took
    finally:
        with _nesting_lock:
            _nesting["depth"] -= 1
            if _nesting["depth"] == 0 and _nesting["threshold"]:
                keep_large_allocations(_SETTLED_MMAP_THRESHOLD)
                release_freed_memory()
                _nesting["threshold"] = 0
