"""Alembic's entry point: runs the revisions on the connection ``kefu.state.database`` passes in (inside its
transaction and advisory lock); there is no offline/SQL-script mode."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("kefu migrations run through kefu.state.database.migrate(), which passes a connection")
context.configure(connection=connection, version_table=context.config.attributes["version_table"],
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
