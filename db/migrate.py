"""Schema migrations of the trace store, run programmatically with Alembic.

The scripts ship inside the package (`spec_agent/db/migrations`), and the Alembic `Config` is built
in code, so no `alembic.ini` is needed. A store written before Alembic managed the schema (schema
version 1, no `alembic_version` table) is stamped with revision 0001 and upgraded from there.

Migrations run in one transaction that holds the database's write lock (`BEGIN IMMEDIATE` on
SQLite, an advisory lock on PostgreSQL), so processes that open a new store at the same time wait
for the first one instead of racing it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from spec_agent.errors import SpecAgentRuntimeError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LEGACY_REVISIONS = {1: "0001"}
"""Alembic revision of each schema version written before Alembic managed the schema."""
UPGRADE_COMMAND = "spec-agent traces upgrade --store {url}"
_POSTGRES_LOCK_ID = 7_316_420_117
"""Arbitrary advisory-lock key that serialises trace store migrations on PostgreSQL."""


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """Build the Alembic configuration, bound to an open connection or to a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision that the shipped scripts define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the store's revision; legacy stores map to their schema version's revision.

    Returns:
        The revision id, or None for an empty database.

    Raises:
        SpecAgentRuntimeError: The database holds tables that are not a trace store, or a schema
            version this spec-agent does not know.
    """
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is not None:
        return revision
    tables = set(inspect(connection).get_table_names())
    if not tables & {"schema_version", "runs", "decisions"}:
        return None
    if "schema_version" not in tables:
        raise SpecAgentRuntimeError(
            f"The database has tables {sorted(tables)} but no schema_version table, so it is not a "
            "spec-agent trace store; use a new database."
        )
    versions = connection.execute(text("SELECT version FROM schema_version")).scalars().all()
    if len(versions) != 1 or versions[0] not in LEGACY_REVISIONS:
        raise SpecAgentRuntimeError(
            f"The trace store has schema version {versions}, which this spec-agent cannot upgrade; "
            "use the spec-agent that wrote it or a new database."
        )
    return LEGACY_REVISIONS[versions[0]]


def prepare_schema(connection: Connection, *, url: str, upgrade: bool) -> str | None:
    """Bring the store's schema to the head revision, or check that it is there.

    Args:
        connection: A connection inside a transaction; the caller commits.
        url: Store URL, for messages.
        upgrade: Run missing migrations; when False, raise instead.

    Returns:
        The revision the store had before, or None when the database was empty.

    Raises:
        SpecAgentRuntimeError: The store is newer than this spec-agent, or older and `upgrade` is
            False.
    """
    _lock(connection)
    before = current_revision(connection)
    head = head_revision()
    if before == head:
        return before
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if before is not None and before not in known:
        raise SpecAgentRuntimeError(
            f"Trace store {url!r} has schema revision {before!r}, newer than this spec-agent "
            f"(head {head!r}); upgrade spec-agent or use another database."
        )
    if not upgrade and before is not None:
        raise SpecAgentRuntimeError(
            f"Trace store {url!r} has schema revision {before!r}, older than {head!r}; upgrade it "
            f"with `{UPGRADE_COMMAND.format(url=url)}`."
        )
    _upgrade(connection, before, head)
    return before


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_ID})


def _upgrade(connection: Connection, before: str | None, head: str) -> None:
    config = alembic_config(connection)
    has_version_table = MigrationContext.configure(connection).get_current_revision() is not None
    if before is not None and not has_version_table:
        # A legacy store: record which revision its tables match before upgrading from it.
        command.stamp(config, before)
    command.upgrade(config, head)
    if before is None:
        logger.info("Created trace store schema %s", head)
    else:
        logger.info("Upgraded trace store schema from %s to %s", before, head)
