"""glibc heap settings for long-running CPU work: what happens to large freed tensors.

By default glibc serves every allocation over 128 KB (rising up to 32 MB as such blocks are freed) with a fresh
``mmap`` and unmaps it on free, and trims the heap's free top. A CPU training step allocates and frees the same
large activations again and again (Gemma 3 270M: ~1.1 million page faults per step of 16 JDDC dialogues, each a
zeroed 4 KB page), so ``keep_large_allocations`` lets the heap serve and keep them (PyTorch's CPU tuning guides
reach the same end with jemalloc or tcmalloc). The server does the opposite when idle (``release_freed_memory``),
so that its RSS shows leaks rather than its busiest moment. Both are no-ops without glibc (musl, macOS).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

_LIBC: Any = None  # the C library once loaded; False where it has no glibc malloc
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_DEFAULT_THRESHOLD = 128 * 1024  # glibc's starting value of both


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


def keep_large_allocations(limit: int = 1 << 30) -> bool:  # glibc takes an int: at most 2 GB - 1
    """Serve allocations up to ``limit`` bytes from the heap and keep freed memory there for reuse (the process's
    RSS stays at its peak). Returns whether glibc took both settings."""
    libc = _libc()
    if not libc:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) & bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))


@contextmanager
def large_allocations_kept(enabled: bool = True) -> Iterator[bool]:
    """``keep_large_allocations`` for the duration of the block; afterwards glibc's starting thresholds again and
    the kept memory handed back, so that a long-lived process (a notebook, the retrain loop) does not stay at the
    block's peak. Yields whether the settings took."""
    took = keep_large_allocations() if enabled else False
    try:
        yield took
    finally:
        if took:
            keep_large_allocations(_DEFAULT_THRESHOLD)
            release_freed_memory()
