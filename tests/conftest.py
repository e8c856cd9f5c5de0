"""Test isolation: every test gets its own $KEFU_HOME and nothing may reach a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "examples" / "shop"
SHARED_DATA = REPO.parent / "shared" / "data"
# the sample shop's promotions run in November 2026: tests that price its products ask at this moment
SHOP_TIME = "2026-11-20T10:00:00+08:00"


@pytest.fixture(autouse=True)
def kefu_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("kefu_home")
    monkeypatch.setenv("KEFU_HOME", str(home))
    monkeypatch.setenv("KEFU_ACTOR", "")  # CLI stages set it per process; undone after each test
    monkeypatch.delenv("KEFU_KEY", raising=False)
    return home


@pytest.fixture
def shared_data() -> Path:
    """The real third-party files in ../shared/data; tests using them skip cleanly when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present: real-data test skipped")
    return SHARED_DATA


@pytest.fixture
def shop_time(monkeypatch) -> str:
    """Fix the shop's clock (``$KEFU_SHOP_TIME``) inside the sample shop's promotion month."""
    monkeypatch.setenv("KEFU_SHOP_TIME", SHOP_TIME)
    return SHOP_TIME


@pytest.fixture(scope="module")
def shop_kg(tmp_path_factory):
    """The bundled sample shop (examples/shop) imported into a fresh SQLite knowledge graph, one per test module."""
    from kefu.kg.store import KnowledgeGraph

    kg = KnowledgeGraph.open(f"sqlite:///{tmp_path_factory.mktemp('kg') / 'kg.db'}")
    kg.import_path(SHOP)
    return kg
