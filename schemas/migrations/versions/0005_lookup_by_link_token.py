"""The lookup index follows the identity index row for row: one row per link token (PostgreSQL only).

Before, each publish decrypted every ID number of the identity index to rebuild the lookup index (40 s at a
million residents). Keyed by the identity row's link token, a publish computes lookup tokens only for the
identity rows it has not indexed yet, and follows merges with one joined UPDATE. An ID number with rows under
two key versions has two index rows with the same lookup token and person, so ``lookup_token`` is indexed,
not unique. The index is derived data: the upgrade empties it and the next publish rebuilds it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA, TABLE = "service", "lookup_index"
#: the hub's key type on PostgreSQL (byte-order collation, as every key column)
LINK_TOKEN = sa.String(64, collation="C")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"TRUNCATE {SCHEMA}.{TABLE}")
    op.drop_constraint("pk_lookup_index", TABLE, schema=SCHEMA, type_="primary")
    op.add_column(
        TABLE,
        sa.Column("link_token", LINK_TOKEN, nullable=False, comment="身份索引的关联令牌（对应 link_identity 的一行）"),
        schema=SCHEMA,
    )
    op.create_primary_key("pk_lookup_index", TABLE, ["link_token"], schema=SCHEMA)
    op.create_index("ix_lookup_index_lookup_token", TABLE, ["lookup_token"], schema=SCHEMA)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"TRUNCATE {SCHEMA}.{TABLE}")
    op.drop_index("ix_lookup_index_lookup_token", TABLE, schema=SCHEMA)
    op.drop_constraint("pk_lookup_index", TABLE, schema=SCHEMA, type_="primary")
    op.drop_column(TABLE, "link_token", schema=SCHEMA)
    op.create_primary_key("pk_lookup_index", TABLE, ["lookup_token"], schema=SCHEMA)
