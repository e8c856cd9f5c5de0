import sys

import pytest

import kefu.heap as heap


def test_without_glibc_both_settings_are_no_ops(monkeypatch):
    """musl or macOS: no ``malloc_trim``/``mallopt`` to load; callers carry on and learn that nothing ran."""
    import ctypes

    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    monkeypatch.setattr(heap, "_LIBC", None)
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert heap.release_freed_memory() == 0
    assert heap.keep_large_allocations() is False
    assert heap.release_freed_memory() == 0  # the failed lookup is remembered, not retried
    assert heap._LIBC is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_settings_and_large_buffers_are_reused():
    import resource

    import torch

    def faults_of_five_buffers() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MB, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with heap.large_allocations_kept() as took:
        assert took
        # glibc's default maps each 64 MB buffer afresh, faulting in all its 4 KB pages every time; with the heap
        # keeping them, the first passes may still grow the heap, later ones reuse it
        faults = [faults_of_five_buffers() for _ in range(6)]
        assert min(faults) < 5 * (64 << 20) // 4096 // 4, faults
    assert max(faults_of_five_buffers() for _ in range(2)) >= 5 * (64 << 20) // 4096  # glibc's thresholds again
    assert heap.release_freed_memory() == 1
