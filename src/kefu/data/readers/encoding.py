"""Bytes and encodings of raw logs: UTF-8 (with or without BOM), UTF-16, GBK/GB18030, sniffed from the first 64 KiB
and decoded line by line so one bad line does not spoil a file; reads report bytes for a progress bar."""

from __future__ import annotations

import codecs
import io
from pathlib import Path
from typing import Iterator

from kefu.data.readers.common import BadFile, Progress

SNIFF_BYTES = 1 << 16


class _Counted(io.RawIOBase):
    """A raw file that reports how many bytes were read, for a progress bar over bytes."""

    def __init__(self, raw, progress: Progress | None):
        self._raw, self._progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n and self._progress:
            self._progress(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(path: Path, progress: Progress | None) -> io.BufferedReader:
    return io.BufferedReader(_Counted(open(path, "rb", buffering=0), progress), buffer_size=1 << 16)


def sniff_encoding(path: Path) -> str:
    """Detect the encoding from the first 64 KiB: BOMs, then strict UTF-8, then GB18030 (a superset of GBK).

    Raises ``BadFile`` for empty, binary or undecodable files.
    """
    with open(path, "rb") as handle:
        sample = handle.read(SNIFF_BYTES)
        at_end = not handle.read(1)
    if not sample.strip():
        raise BadFile("empty file")
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        raise BadFile("binary file (NUL bytes), not text")
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=at_end)
            return encoding
        except UnicodeDecodeError:
            continue
    raise BadFile("not valid text in UTF-8 or GBK/GB18030 (wrong encoding?)")


def _decoded_lines(handle, encoding: str, bad_lines: set[int] | None = None) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when it does not decode, raw bytes); decoding line by line keeps one bad
    line from spoiling the file."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    for number, raw in enumerate(handle, start=1):
        if number == 1 and encoding == "utf-8-sig" and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            yield number, raw.decode(codec), raw
        except UnicodeDecodeError:
            if bad_lines is not None:
                bad_lines.add(number)
            yield number, None, raw


def text_lines(path: Path, encoding: str, progress: Progress | None,
                bad_lines: set[int] | None = None) -> Iterator[tuple[int, str | None, bytes]]:
    if encoding == "utf-16":  # not line-splittable as bytes; rare in practice
        with open(path, encoding="utf-16", errors="replace", newline="") as handle:
            for number, text in enumerate(handle, start=1):
                if progress:
                    progress(len(text.encode("utf-16-le")))
                yield number, text, text.encode("utf-8")
        return
    with open_binary(path, progress) as handle:
        yield from _decoded_lines(handle, encoding, bad_lines)

