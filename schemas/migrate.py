"""Alembic migrations of the hub database, run on an engine the caller supplies (``hub db upgrade``).

The hub's own state tables (ingest watermarks, audit heads, the identity index) and the published model
(``schemas.unified``) are both under Alembic. On SQLite the tier schemas are mapped away (one file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from schemas.base import HubError
from schemas.unified import SQLITE_SCHEMAS

MIGRATIONS = Path(__file__).parent / "migrations"


class MigrationError(HubError):
    """The database cannot be brought to the asked revision (the message says why)."""


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def prepared(connection: sa.Connection) -> sa.Connection:
    """The connection with the tier schemas mapped away on SQLite (where a database has no schemas)."""
    if connection.dialect.name == "sqlite":
        return connection.execution_options(schema_translate_map=SQLITE_SCHEMAS)
    return connection


@contextmanager
def _connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.begin() as conn:
        yield prepared(conn)


def head() -> str:
    """The newest revision this code knows."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _migrate(engine: sa.Engine, step: Callable[[Config, str], None], name: str, revision: str) -> str | None:
    """Run one Alembic command in one transaction; a database error becomes a MigrationError naming the step."""
    try:
        with _connection(engine) as conn:
            step(_config(conn), revision)
    except sa.exc.SQLAlchemyError as exc:
        cause = exc.orig if hasattr(exc, "orig") else exc
        raise MigrationError(f"{name} to {revision} failed: {type(exc).__name__}: {cause}") from exc
    return current(engine)


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Bring the database up to ``revision`` (default: the newest) in one transaction; returns where it is."""
    return _migrate(engine, command.upgrade, "upgrade", revision)


def downgrade(engine: sa.Engine, revision: str) -> str | None:
    """Step the database down to ``revision`` ("base" removes everything the migrations made)."""
    return _migrate(engine, command.downgrade, "downgrade", revision)


def ensure_current(engine: sa.Engine) -> None:
    """Upgrade when the database is behind this code (cheap when it is at head)."""
    if current(engine) != head():
        upgrade(engine)
