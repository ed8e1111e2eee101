"""Alembic environment: runs on the connection ``schemas.migrate`` hands over (no URL or environment here)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context


def target_metadata() -> list[sa.MetaData]:
    """Every table the migrations own (used by autogenerate when a developer writes a new migration)."""
    from connectors.state import metadata as ingest_state
    from linkage.store import metadata as identity_index
    from privacy.audit_log import metadata as audit_heads
    from schemas.unified import metadata as published

    return [ingest_state, audit_heads, identity_index, published]


connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by schemas.migrate
    raise RuntimeError("run migrations through `hub db upgrade` (schemas.migrate), which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    include_schemas=connection.dialect.name == "postgresql",
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
