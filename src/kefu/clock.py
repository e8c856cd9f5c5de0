"""The shop's clock: the moment the shop's facts are evaluated at (promotions in force, return windows, delivery
estimates). Real time, unless ``KEFU_SHOP_TIME`` (ISO 8601 with an offset) fixes it: replaying a past day, a
benchmark's questions asked "on 2026-11-20", tests that must not change with the calendar. Wall-clock needs that are
not about the shop (logs, audit times, timeouts) keep using real time."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from kefu.types import KefuError

SHOP_TIME_ENV = "KEFU_SHOP_TIME"


def parse_time(text: str, what: str = SHOP_TIME_ENV) -> datetime:
    """An ISO 8601 time that carries its offset (``2026-11-20T10:00:00+08:00``); a naive time is an error."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise KefuError(f"{what}: {text!r} is not an ISO 8601 time ({exc})") from exc
    if value.tzinfo is None:
        raise KefuError(f"{what}: {text!r} has no UTC offset (write e.g. 2026-11-20T10:00:00+08:00)")
    return value


def shop_now() -> datetime:
    """Now, for the shop's facts: ``$KEFU_SHOP_TIME`` when set, else the real time (timezone-aware)."""
    fixed = os.environ.get(SHOP_TIME_ENV)
    return parse_time(fixed) if fixed else datetime.now(timezone.utc)
