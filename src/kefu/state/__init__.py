"""Where kefu's shared state lives: the one owner of the state backend.

``sqlite`` (the embedded default, what ``make demo`` uses): one SQLite file per store under ``$KEFU_HOME`` and
in-process sessions, cache and rate limits. ``postgres`` (fleets): every store's tables in one PostgreSQL database
(``database_url``) and sessions, the response cache, its single flight and the rate limits in Redis
(``redis_url``), so several ``kefu serve`` replicas share one state.

The backend is chosen in kefu.yaml (``state:``) and applied process-wide by the CLI (:func:`configure`); the
environment (``KEFU_STATE_BACKEND``, ``KEFU_DATABASE_URL``, ``KEFU_REDIS_URL``, ``KEFU_REDIS_PREFIX``) overrides the file, so replicas
started by a process manager or docker-compose need no file. Stores ask :func:`database_url` for their URL and
:func:`redis_url` for Redis; neither opens a connection.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from kefu.paths import state_path
from kefu.types import KefuError

__all__ = ["StateConfig", "configure", "settings", "database_url", "redis_url", "is_shared",
           "redis_prefix", "BACKEND_ENV", "DATABASE_URL_ENV", "REDIS_URL_ENV", "REDIS_PREFIX_ENV"]

BACKEND_ENV = "KEFU_STATE_BACKEND"
DATABASE_URL_ENV = "KEFU_DATABASE_URL"
REDIS_URL_ENV = "KEFU_REDIS_URL"
REDIS_PREFIX_ENV = "KEFU_REDIS_PREFIX"


class StateConfig(BaseModel):
    """``state:`` in kefu.yaml."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sqlite", "postgres"] = "sqlite"
    # SQLAlchemy URL of the shared database, e.g. postgresql+psycopg://kefu@db:5432/kefu (postgres backend)
    database_url: str | None = None
    # Redis URL for sessions, the response cache, single flight and rate limits, e.g. redis://cache:6379/0
    redis_url: str | None = None
    # every Redis key kefu writes starts with this (several shops or test runs can share one Redis)
    redis_prefix: str = "kefu"

    @model_validator(mode="after")
    def _complete(self) -> "StateConfig":
        if self.backend == "postgres" and not (self.database_url and self.redis_url):
            raise ValueError("backend postgres needs database_url and redis_url")
        return self


_configured: StateConfig | None = None


def configure(config: StateConfig | None) -> None:
    """Make ``config`` this process's state backend (None: back to the default and the environment)."""
    global _configured
    _configured = config


def settings() -> StateConfig:
    """The backend in force: the environment over the configured section over the default."""
    base = _configured or StateConfig()
    backend = os.environ.get(BACKEND_ENV) or base.backend
    try:
        return StateConfig(backend=backend,
                           database_url=os.environ.get(DATABASE_URL_ENV) or base.database_url,
                           redis_url=os.environ.get(REDIS_URL_ENV) or base.redis_url,
                           redis_prefix=os.environ.get(REDIS_PREFIX_ENV) or base.redis_prefix)
    except ValueError as exc:
        raise KefuError(f"state backend ({BACKEND_ENV}/{DATABASE_URL_ENV}/{REDIS_URL_ENV} or kefu.yaml state:): "
                        f"{exc}") from exc


def is_shared() -> bool:
    """True when state is shared between processes and machines (the postgres backend)."""
    return settings().backend == "postgres"


def database_url(store: str) -> str:
    """The SQLAlchemy URL of one store (``keys``, ``consent``, ``feedback``, ``kg``, ``registry``, ``audit``...):
    ``sqlite:///$KEFU_HOME/<store>.db`` by default, the shared database with the postgres backend."""
    current = settings()
    if current.backend == "postgres":
        return str(current.database_url)
    return f"sqlite:///{state_path(f'{store}.db')}"


def redis_url() -> str | None:
    """The Redis URL with the postgres backend; None for the embedded default (in-process state)."""
    current = settings()
    return current.redis_url if current.backend == "postgres" else None


def redis_prefix() -> str:
    """The prefix of every Redis key kefu writes (``<prefix>:<what>:...``)."""
    return settings().redis_prefix
