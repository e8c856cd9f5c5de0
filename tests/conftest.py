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


# -- the real services (PostgreSQL and Redis on loopback): tests use them for real; under CI they must be there ----
POSTGRES_ADMIN_URL = os.environ.get("KEFU_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("KEFU_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _service_missing(what: str, exc: Exception):
    message = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI provides it, so this test fails rather than skips")
    pytest.skip(message)


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for this test (dropped afterwards); its SQLAlchemy URL."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"kefu_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        _service_missing("PostgreSQL", exc)
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_state():
    """The real Redis and a key prefix of this test's own: ``(url, prefix)``; the test's keys are deleted after."""
    import uuid

    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _service_missing("Redis", exc)
    prefix = f"kefu-test-{uuid.uuid4().hex[:12]}"
    yield REDIS_TEST_URL, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def shared_state(postgres_url, redis_state, monkeypatch):
    """This process (and the subprocesses it starts) on the postgres backend: a fresh database, the real Redis with a
    prefix of its own. Yields the environment a replica needs."""
    from kefu import state

    redis_url, prefix = redis_state
    env = {state.BACKEND_ENV: "postgres", state.DATABASE_URL_ENV: postgres_url, state.REDIS_URL_ENV: redis_url,
           state.REDIS_PREFIX_ENV: prefix}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
