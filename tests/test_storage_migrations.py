"""The schema comes from the Alembic migrations, run when a ``Storage`` opens: a new
database is brought to head, an older one is upgraded with its rows, several workers
starting together migrate once, and the models agree with the migrations."""

from __future__ import annotations

import multiprocessing
import tomllib

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text

from cds_service import migrations
from cds_service.storage import Base, FeedbackRecord, Storage
from tests.conftest import REPO

TABLES = {"alembic_version", "feedback", "invocation_audit", "issued_card", "card_override"}
FEEDBACK = {"card": "kept", "outcome": "overridden", "outcomeTimestamp": "2024-05-01T12:00:00Z"}


def test_a_new_database_is_created_at_the_newest_revision(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'new.sqlite'}")
    assert set(inspect(storage.engine).get_table_names()) == TABLES
    assert migrations.current_revision(storage.engine) == migrations.head()
    storage.close()


def test_the_models_and_the_migrations_describe_the_same_schema(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'compare.sqlite'}")
    with storage.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    storage.close()


def test_a_database_from_before_migrations_is_upgraded_with_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    before = MetaData()
    FeedbackRecord.__table__.to_metadata(before)  # what create_all used to make
    before.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO feedback (service_id, card_uuid, outcome, outcome_timestamp, "
            "received_at) VALUES ('s', 'from-before', 'overridden', '2024-05-01 12:00:00', "
            "'2024-05-01 12:00:01')"))
    engine.dispose()

    storage = Storage(url)
    assert [row.card_uuid for row in storage.feedback()] == ["from-before"]
    assert set(inspect(storage.engine).get_table_names()) == TABLES
    storage.record_feedback("s", [FEEDBACK])
    assert len(storage.feedback()) == 2
    storage.close()


def test_reopening_a_database_at_head_keeps_everything(tmp_path):
    url = f"sqlite:///{tmp_path / 'again.sqlite'}"
    Storage(url).record_feedback("s", [FEEDBACK])
    storage = Storage(url)
    assert [row.card_uuid for row in storage.feedback()] == ["kept"]
    storage.close()


def test_every_migration_can_be_undone_and_redone(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'down.sqlite'}")
    config = migrations.alembic_config()
    with storage.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(storage.engine).get_table_names()) == {"alembic_version"}
    migrations.upgrade(storage.engine)
    assert set(inspect(storage.engine).get_table_names()) == TABLES
    storage.close()


def _open(url: str, barrier) -> None:
    barrier.wait()
    Storage(url).close()


def assert_concurrent_starts_migrate_once(url: str, processes: int) -> None:
    """Several processes open the same empty database at once (as gunicorn workers do):
    all succeed, and the schema ends at the head revision exactly once."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    workers = [context.Process(target=_open, args=(url, barrier)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    storage = Storage(url)
    with storage.engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(migrations.head(),)]
    storage.close()


def test_workers_starting_together_migrate_once_without_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    assert_concurrent_starts_migrate_once(url, 6)


def test_the_migrations_are_installed_with_the_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "cds_service.migrations" in config["packages"]
    shipped = set(config["package-data"]["cds_service.migrations"])
    assert {"versions/*.py", "script.py.mako"} <= shipped
    assert list(migrations.SCRIPT_LOCATION.glob("versions/*.py"))
