"""Fixtures of the kg tests: a small shop that follows examples/shop/SCHEMA.md, imported into a fresh graph."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kefu.kg.store import KnowledgeGraph

FIXTURE_SHOP = Path(__file__).parent / "data" / "shop"
CST = timezone(timedelta(hours=8))
AT = datetime(2026, 11, 12, 10, 0, tzinfo=CST)  # inside the fixture's November promotions


@pytest.fixture
def shop_dir(tmp_path) -> Path:
    """A copy of the fixture shop that a test may edit."""
    target = tmp_path / "shop"
    shutil.copytree(FIXTURE_SHOP, target)
    return target


@pytest.fixture
def kg(shop_dir) -> KnowledgeGraph:
    graph = KnowledgeGraph.open()
    graph.import_path(shop_dir)
    yield graph
    graph.close()
