"""Progress with an ETA that also works when stderr is a file or a pipe (one owner for eval, serve's eval and train).

Rich's progress bar draws nothing while it runs when its output is not a terminal (a log file, ``nohup``, a CI
job); ``Progress`` shows Rich's bar on a terminal and otherwise prints one plain line every ``every_n`` units or
``every_s`` seconds, and at the end::

    train: 12/151 (8%) elapsed 4:02 eta 46:50 loss 2.8141 1,520 tok/s

``info`` (``advance(info=...)``) is free text shown after the ETA (the trainer's loss and tokens/s).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "duration", "is_terminal"]


def duration(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour) of a non-negative number of seconds."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (where Rich can draw a live bar)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """Progress with an ETA on ``stream`` (stderr): Rich's bar on a terminal, plain lines otherwise.

    ``advance()`` after each unit; ``done`` units already finished before this run (a resume) count toward the
    total but not toward the rate. ``rich`` forces the bar on or off (default: on exactly when ``stream`` is a
    terminal)."""

    def __init__(self, total: int, label: str = "eval", *, done: int = 0, every_n: int | None = None,
                 every_s: float = 10.0, stream: TextIO | None = None, enabled: bool = True, rich: bool | None = None):
        self.total, self.label, self.enabled = total, label, enabled
        self.count = done
        self.start_count = done
        self.every_n = every_n or max(1, total // 10)
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.started = self._last = time.monotonic()
        self._last_count = done
        self.info = ""
        self._bar = None
        if enabled and (rich if rich is not None else is_terminal(self.stream)):
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"), console=Console(file=self.stream),
                                     transient=False)
            self._task = self._bar.add_task(label, total=total, completed=done, info="")
            self._bar.start()

    def eta_s(self) -> float | None:
        """Seconds left at this run's rate so far (None before the first unit)."""
        made = self.count - self.start_count
        if made <= 0:
            return None
        return (time.monotonic() - self.started) / made * max(0, self.total - self.count)

    def line(self) -> str:
        eta = self.eta_s()
        elapsed = time.monotonic() - self.started
        pct = 100.0 * self.count / self.total if self.total else 100.0
        text = (f"{self.label}: {self.count}/{self.total} ({pct:.0f}%) elapsed {duration(elapsed)} "
                f"eta {duration(eta) if eta is not None else '?'}")
        return f"{text} {self.info}" if self.info else text

    def advance(self, n: int = 1, *, info: str | None = None) -> None:
        self.count += n
        if info is not None:
            self.info = info
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=self.info)
            return
        now = time.monotonic()
        if (self.count - self._last_count >= self.every_n or now - self._last >= self.every_s
                or self.count >= self.total):
            print(self.line(), file=self.stream, flush=True)
            self._last, self._last_count = now, self.count

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Progress":
        if self.enabled and self._bar is None and self.start_count:
            print(f"{self.label}: resuming, {self.start_count}/{self.total} already done", file=self.stream,
                  flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
