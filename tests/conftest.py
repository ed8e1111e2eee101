"""Shared fixtures: throw-away PostgreSQL databases, created for the run and dropped afterwards.

Which PostgreSQL server the tests use, first that applies:

1. ``HUB_TEST_DATABASE_URL`` (an admin URL); unreachable is a failure;
2. a throwaway server started for the run from the installed binaries (pytest-postgresql), found on PATH
   or under /usr/lib/postgresql/*/bin; not as root, since initdb refuses to run as root;
3. the server on 127.0.0.1:5432 (user postgres, trust), when one answers.

Without any of them the PostgreSQL tests skip locally and fail in CI (``CI=true``). The terminal summary
says which server was used, or that PostgreSQL was not tested.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_postgresql import factories
from sqlalchemy.engine import make_url

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

URL_ENV = "HUB_TEST_DATABASE_URL"
LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))


def find_pg_ctl() -> str | None:
    """pg_ctl on PATH, else the newest under /usr/lib/postgresql/*/bin (Debian keeps it off PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return installed[-1] if installed else None


PG_CTL = find_pg_ctl()

# Session fixture starting a PostgreSQL server of this run's own (initdb in the pytest temp folder);
# requested only when HUB_TEST_DATABASE_URL is unset and it can work.
postgresql_throwaway = factories.postgresql_proc(executable=PG_CTL, host="127.0.0.1", port=None)


@dataclass
class PgUse:
    """What the PostgreSQL tests ran against, for the terminal summary."""

    server: str | None = None  # where, in words; None when PostgreSQL was not tested
    not_tested: str | None = None  # why not
    databases: list[str] = field(default_factory=list)


PG_USE = PgUse()


def _answers(url: str) -> str | None:
    """None when the server at ``url`` takes a connection, else why not."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    finally:
        engine.dispose()


def _throwaway(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """(admin URL, description) of a server started for this run, or (None, why it could not start)."""
    if PG_CTL is None:
        return None, "no pg_ctl on PATH or under /usr/lib/postgresql/*/bin"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return None, "running as root, where initdb refuses to create a cluster"
    try:
        proc = request.getfixturevalue("postgresql_throwaway")
    except Exception as exc:  # any start failure falls through to the local server
        return None, f"{PG_CTL} could not start a server: {type(exc).__name__}: {exc}"
    url = f"postgresql+psycopg://{proc.user}@{proc.host}:{proc.port}/postgres"
    return url, f"a throwaway server from {Path(PG_CTL).resolve().parent} on {proc.host}:{proc.port}"


@pytest.fixture(scope="session")
def pg_admin_url(request: pytest.FixtureRequest) -> str:
    """An admin URL of the PostgreSQL server this run tests against (see the module docstring)."""
    given = os.environ.get(URL_ENV)
    if given:
        shown = make_url(given).render_as_string(hide_password=True)
        problem = _answers(given)
        if problem:
            pytest.fail(f"PostgreSQL at {shown} ({URL_ENV}) is not reachable: {problem}")
        PG_USE.server = f"{shown} ({URL_ENV})"
        return given
    url, why_not = _throwaway(request)
    if url is not None:
        PG_USE.server = why_not
        return url
    local_problem = _answers(LOCAL_URL)
    if local_problem is None:
        PG_USE.server = f"the local server on 127.0.0.1:5432 (no throwaway server: {why_not})"
        return LOCAL_URL
    reason = f"{URL_ENV} is unset; no throwaway server ({why_not}); 127.0.0.1:5432: {local_problem}"
    PG_USE.not_tested = reason
    if _in_ci():
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    pytest.skip(f"no PostgreSQL: {reason}")


def _throwaway_database(admin_url: str) -> Generator[str, None, None]:
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        shown = make_url(admin_url).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL at {shown} is not reachable: {exc}")
    PG_USE.databases.append(name)
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """One database for the whole test run, dropped at the end."""
    yield from _throwaway_database(pg_admin_url)


@pytest.fixture
def fresh_pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database of this test's own, for tests that fill whole schemas."""
    yield from _throwaway_database(pg_admin_url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which PostgreSQL the run used, or loudly that it was not tested."""
    if PG_USE.server is not None:
        made = len(PG_USE.databases)
        names = ", ".join(PG_USE.databases[:3]) + (", ..." if made > 3 else "")
        terminalreporter.write_line(
            f"PostgreSQL tests ran against {PG_USE.server}; {made} database(s) created and dropped: {names}"
        )
    elif PG_USE.not_tested is not None:
        terminalreporter.write_line(f"PostgreSQL was NOT tested: {PG_USE.not_tested}", red=True, bold=True)


OWN_PACKAGES = ("hub", "connectors", "schemas", "privacy", "linkage", "publish", "simulators")


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG as an operator's DEBUG logging would be: the root and all that inherit from it.

    Loggers that do not propagate are captured too. Libraries that pin a level of their own keep it:
    SQLAlchemy pins WARNING because its INFO/DEBUG is its opt-in echo, which prints every row read.
    """
    caplog.set_level(logging.DEBUG)
    isolated = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level > logging.DEBUG and name.split(".")[0] in OWN_PACKAGES:
            caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            isolated.append(logger)
    yield caplog
    for logger in isolated:
        logger.removeHandler(caplog.handler)
