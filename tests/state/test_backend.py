"""kefu.state: which backend is in force and the URL each store gets."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from kefu import state
from kefu.config import load_config
from kefu.types import KefuError


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    for name in (state.BACKEND_ENV, state.DATABASE_URL_ENV, state.REDIS_URL_ENV, state.REDIS_PREFIX_ENV):
        monkeypatch.delenv(name, raising=False)
    state.configure(None)
    yield
    state.configure(None)


def test_default_is_one_sqlite_file_per_store_under_kefu_home(kefu_home):
    assert not state.is_shared() and state.redis_url() is None
    assert state.database_url("keys") == f"sqlite:///{kefu_home / 'keys.db'}"
    assert state.database_url("feedback") != state.database_url("keys")


def test_kefu_yaml_state_section_becomes_the_process_backend(tmp_path):
    config = tmp_path / "kefu.yaml"
    config.write_text("state:\n  backend: postgres\n  database_url: postgresql+psycopg://db/kefu\n"
                      "  redis_url: redis://cache:6379/0\n  redis_prefix: shop1\n", encoding="utf-8")
    load_config(config)
    assert state.is_shared()
    assert state.database_url("keys") == state.database_url("kg") == "postgresql+psycopg://db/kefu"
    assert state.redis_url() == "redis://cache:6379/0" and state.redis_prefix() == "shop1"


def test_postgres_without_its_urls_is_an_error_naming_the_fields(tmp_path, monkeypatch):
    config = tmp_path / "kefu.yaml"
    config.write_text("state:\n  backend: postgres\n", encoding="utf-8")
    with pytest.raises(KefuError, match="state.*database_url and redis_url"):
        load_config(config)
    monkeypatch.setenv(state.BACKEND_ENV, "postgres")
    with pytest.raises(KefuError, match=state.DATABASE_URL_ENV):
        state.settings()


def test_the_environment_overrides_the_file(tmp_path, monkeypatch):
    config = tmp_path / "kefu.yaml"
    config.write_text("state:\n  backend: postgres\n  database_url: postgresql+psycopg://db/kefu\n"
                      "  redis_url: redis://cache:6379/0\n", encoding="utf-8")
    load_config(config)
    monkeypatch.setenv(state.DATABASE_URL_ENV, "postgresql+psycopg://other/kefu")
    monkeypatch.setenv(state.BACKEND_ENV, "sqlite")
    assert not state.is_shared() and state.database_url("kg").startswith("sqlite:///")
    monkeypatch.setenv(state.BACKEND_ENV, "postgres")
    assert state.database_url("kg") == "postgresql+psycopg://other/kefu"


def test_shared_state_fixture_reaches_the_real_services(shared_state):
    import redis

    assert state.is_shared()
    engine = create_engine(state.database_url("keys"))
    with engine.connect() as conn:
        assert conn.execute(text("select current_database()")).scalar().startswith("kefu_test_")
    engine.dispose()
    client = redis.Redis.from_url(state.redis_url())
    client.set(f"{state.redis_prefix()}:probe", "1")
    assert client.get(f"{state.redis_prefix()}:probe") == b"1"
    client.close()
