"""The shop's clock: real time unless KEFU_SHOP_TIME fixes it, and never a naive time."""

from datetime import datetime, timedelta, timezone

import pytest

from kefu.clock import parse_time, shop_now
from kefu.types import KefuError


def test_real_time_by_default(monkeypatch):
    monkeypatch.delenv("KEFU_SHOP_TIME", raising=False)
    assert abs(shop_now() - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_fixed_by_the_environment(monkeypatch):
    monkeypatch.setenv("KEFU_SHOP_TIME", "2026-11-20T10:00:00+08:00")
    assert shop_now() == datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", ["2026-11-20 10:00", "next tuesday"])
def test_a_time_without_offset_or_unreadable_is_an_error(bad):
    with pytest.raises(KefuError, match="KEFU_SHOP_TIME"):
        parse_time(bad)
