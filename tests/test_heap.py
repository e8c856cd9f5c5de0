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
    assert heap.keep_large_allocations() == 0
    with heap.large_allocations_kept() as took:
        assert took is False
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
    # afterwards the kept memory is handed back: buffers fault in again (fresh mappings, or trimmed heap pages)
    assert faults_of_five_buffers() > min(faults) + 5 * (64 << 20) // 4096 // 4
    assert heap.release_freed_memory() == 1


class _FakeLibc:
    """A C library whose mallopt refuses mmap thresholds above ``ceiling`` (as some glibc versions do)."""

    def __init__(self, ceiling):
        self.ceiling, self.settings, self.trims = ceiling, {}, 0

    def mallopt(self, param, value):
        if param == heap._M_MMAP_THRESHOLD and value > self.ceiling:
            return 0
        self.settings[param] = value
        return 1

    def malloc_trim(self, pad):
        self.trims += 1


def test_a_refused_threshold_falls_back_and_nested_blocks_restore_once(monkeypatch):
    fake = _FakeLibc(ceiling=32 << 20)
    monkeypatch.setattr(heap, "_LIBC", fake)
    with heap.large_allocations_kept() as took:
        assert took and fake.settings == {heap._M_MMAP_THRESHOLD: 32 << 20, heap._M_TRIM_THRESHOLD: 64 << 20}
        fake.settings.clear()
        with heap.large_allocations_kept() as inner:
            assert inner
        assert fake.settings == {} and fake.trims == 0  # the inner block left the outer one's settings alone
    assert fake.settings == {heap._M_MMAP_THRESHOLD: 32 << 20, heap._M_TRIM_THRESHOLD: 64 << 20} and fake.trims == 1
    fake = _FakeLibc(ceiling=1 << 40)
    monkeypatch.setattr(heap, "_LIBC", fake)
    try:
        with heap.large_allocations_kept():
            assert fake.settings[heap._M_MMAP_THRESHOLD] == 1 << 30
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    assert fake.settings[heap._M_MMAP_THRESHOLD] == 32 << 20 and fake.trims == 1  # restored on the way out
