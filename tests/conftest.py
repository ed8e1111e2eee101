"""Shared fixtures: a throw-away PostgreSQL database per test run, and contracts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Create a fresh database on the server named by HUB_TEST_DATABASE_URL and drop it afterwards.

    Locally an unset variable skips the test; in CI (CI=true) it is a failure, never a skip.
    """
    admin_url = os.environ.get("HUB_TEST_DATABASE_URL")
    if not admin_url:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("HUB_TEST_DATABASE_URL is not set in CI: PostgreSQL tests must run")
        pytest.skip("HUB_TEST_DATABASE_URL is not set")
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {make_url(admin_url).render_as_string(hide_password=True)} is not reachable: {exc}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
