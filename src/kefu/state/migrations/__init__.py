"""Alembic migrations of the shared PostgreSQL database (every store's tables); run by ``kefu.state.database``.

Rule for new revisions: only add (tables, nullable columns, indexes), so replicas of the previous release keep working
on a database that a newer one has migrated during a rolling upgrade. Write a revision by hand after the last one in
``versions/`` (``down_revision`` is its ``revision``); ``tests/state/test_migrations.py`` checks that head matches
the tables the stores declare.
"""
