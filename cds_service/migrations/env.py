"""Alembic environment: the connection comes from ``upgrade`` (start-up), or from
``-x url=...`` on the alembic command line."""

from alembic import context
from sqlalchemy import create_engine

from cds_service.storage import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database: alembic ... -x url=<SQLAlchemy URL>")
    with create_engine(url).connect() as connection:
        _run(connection)
        connection.commit()
