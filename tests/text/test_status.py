"""The status table: the KG schema's order statuses, and every status word a reply may state."""

from __future__ import annotations

from pathlib import Path

from kefu.text.status import AFTER_SALES_STATUSES, LOGISTICS_STATUSES, ORDER_STATUSES, STATUS_WORDS


def test_order_statuses_are_the_schemas():
    schema = (Path(__file__).resolve().parents[2] / "examples" / "shop" / "SCHEMA.md").read_text(encoding="utf-8")
    assert "|".join(ORDER_STATUSES) in schema


def test_status_words_cover_every_set_once():
    assert set(STATUS_WORDS) == set(ORDER_STATUSES) | set(LOGISTICS_STATUSES) | set(AFTER_SALES_STATUSES)
    assert len(STATUS_WORDS) == len(set(STATUS_WORDS))
    assert {"运输中", "派送中", "已揽收"} <= set(LOGISTICS_STATUSES) and "已退款" in AFTER_SALES_STATUSES
