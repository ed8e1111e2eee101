"""Shared fixtures: throw-away PostgreSQL databases, created for the run and dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _admin_url() -> str:
    """The server named by HUB_TEST_DATABASE_URL; unset skips locally and fails in CI (CI=true)."""
    admin_url = os.environ.get("HUB_TEST_DATABASE_URL")
    if not admin_url:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("HUB_TEST_DATABASE_URL is not set in CI: PostgreSQL tests must run")
        pytest.skip("HUB_TEST_DATABASE_URL is not set")
    return admin_url


def _throwaway_database() -> Iterator[str]:
    admin_url = _admin_url()
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        shown = make_url(admin_url).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL at {shown} is not reachable: {exc}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One database for the whole test run on the server named by HUB_TEST_DATABASE_URL."""
    yield from _throwaway_database()


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A database of this test's own, for tests that fill whole schemas."""
    yield from _throwaway_database()
