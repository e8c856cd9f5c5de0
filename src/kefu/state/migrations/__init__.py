"""Alembic migrations of the shared PostgreSQL database (every store's tables); run by ``kefu.state.database``."""
