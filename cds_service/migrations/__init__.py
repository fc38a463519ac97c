"""Database schema migrations (Alembic), run at start-up by ``Storage``.

Each file in ``versions/`` is one step of the schema's history. To change the
schema, change the models in ``cds_service/storage.py`` and add a step::

    python3 -m alembic -c cds_service/migrations/alembic.ini revision --autogenerate \\
        -m "what changes" -x url=sqlite:///instance/cds_service.sqlite

(``tests/test_storage_migrations.py`` fails while the models and the steps disagree.)

Several worker processes may start at once: the upgrade runs in one transaction
that first takes a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction
advisory lock), so the first worker migrates and the others find the schema at
head. Elsewhere, a failure is tolerated when the schema turns out to be at head.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
SCRIPT_LOCATION = Path(__file__).resolve().parent
#: Any constant shared by every worker: the key of the PostgreSQL advisory lock.
_ADVISORY_LOCK_KEY = 0x5C15_C05D


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    """Begin the migration transaction, holding the lock that serialises workers."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql("PRAGMA busy_timeout=60000")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})")
    else:
        connection.begin()


def upgrade(engine: Engine) -> None:
    """Bring the database's schema to the newest revision (nothing to do when it is)."""
    config = alembic_config()
    try:
        with engine.connect() as connection:
            _lock(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    except SQLAlchemyError:
        if current_revision(engine) != head():
            raise
        log.info("database schema already upgraded by another process")
