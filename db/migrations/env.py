"""Alembic environment of the trace store.

`spec_agent.db.migrate` builds the Alembic `Config` in code and passes an open connection in
`config.attributes["connection"]`, so migrations run inside the caller's transaction and lock.
Run from the `alembic` command line, the URL comes from `sqlalchemy.url` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from spec_agent.db.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot alter constraints in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or on a new engine from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as new_connection:
        _run(new_connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("The trace store migrations need a database connection; offline mode is not supported.")
run_migrations_online()
