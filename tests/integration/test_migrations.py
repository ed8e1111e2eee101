"""Alembic migrations on real SQLite and PostgreSQL: up, down to base, up again; the migrations make exactly
the model (autogenerate finds nothing to do); an existing pre-Alembic hub database is adopted."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from linkage import store
from schemas import migrate
from schemas.unified import metadata as published
from schemas.unified import published_tables


def _engine(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> sa.Engine:
    if dialect == "sqlite":
        return sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    return sa.create_engine(request.getfixturevalue("fresh_pg_url"))


def _tables(engine: sa.Engine) -> set[str]:
    inspector = sa.inspect(engine)
    schemas = [None] if engine.dialect.name == "sqlite" else [None, "core", "sensitive", "release"]
    return {f"{s}.{t}" if s else t for s in schemas for t in inspector.get_table_names(schema=s)}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    engine = _engine(dialect, tmp_path, request)
    assert migrate.current(engine) is None
    assert migrate.upgrade(engine) == migrate.head() == "0005"
    made = _tables(engine)
    expected = {t.name if dialect == "sqlite" else t.fullname for t in published_tables()}
    assert expected <= made and "link_record" in made and "ingest_watermark" in made
    assert migrate.downgrade(engine, "0001") == "0001"
    left = _tables(engine)
    assert not expected & left and "link_record" in left  # the published model goes, the hub's state stays
    assert migrate.downgrade(engine, "base") is None
    assert _tables(engine) <= {"alembic_version"}
    assert migrate.upgrade(engine) == "0005"
    assert _tables(engine) == made
    engine.dispose()


def _table_of(diff: object) -> str | None:
    """The table an autogenerate difference is about (the database holds other metadata's tables too)."""
    item = diff[0] if isinstance(diff, list) else diff
    assert isinstance(item, tuple)
    obj = item[1]
    if isinstance(obj, sa.Table):
        return obj.name
    if isinstance(obj, sa.Index | sa.UniqueConstraint) and obj.table is not None:
        return obj.table.name
    return str(item[2]) if len(item) > 2 else None


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_migrations_make_exactly_the_model(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from connectors.state import metadata as ingest_state
    from privacy.audit_log import metadata as audit_heads
    from publish import lookup
    from service import tables as service_tables

    engine = _engine(dialect, tmp_path, request)
    migrate.upgrade(engine)
    with engine.connect() as raw:
        conn = migrate.prepared(raw)
        context = MigrationContext.configure(
            conn, opts={"include_schemas": dialect == "postgresql", "compare_type": True}
        )
        service = (lookup.metadata, service_tables.metadata) if dialect == "postgresql" else ()  # PostgreSQL only
        for metadata in (published, store.metadata, ingest_state, audit_heads, *service):
            target = metadata
            if dialect == "sqlite":  # one file, no schemas: compare with the tiers mapped away as the engine does
                target = sa.MetaData(naming_convention=metadata.naming_convention)
                for t in metadata.tables.values():
                    t.to_metadata(target, schema=None)
            mine = {t.name for t in target.tables.values()}
            diff = [d for d in compare_metadata(context, target) if _table_of(d) in mine]
            assert diff == [], diff
    engine.dispose()


def test_an_existing_pre_alembic_hub_database_is_adopted(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    store.create(engine)  # what `hub link` made before the migrations existed
    with engine.begin() as conn:
        conn.execute(sa.insert(store.link_run).values(started_at=store.now()))
    assert migrate.upgrade(engine) == "0005"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.link_run)).scalar_one() == 1
    engine.dispose()
