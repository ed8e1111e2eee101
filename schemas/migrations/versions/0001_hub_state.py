"""The hub's own state tables: ingest watermarks and files, audit-log heads, the identity index.

A database made before Alembic already holds some of them, so each is created only where missing (this
baseline adopts them); later changes to these tables get migrations of their own.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if not _has_table("audit_head"):
        op.create_table(
            "audit_head",
            sa.Column("log", sa.Text(), nullable=False, comment="the log's file name, e.g. reveal.log"),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("hash", sa.Text(), nullable=False),
            sa.Column("updated", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("log"),
            comment="last entry of each audit log, kept apart from the file so a rewritten or deleted log shows",
        )
    if not _has_table("ingest_boundary_key"):
        op.create_table(
            "ingest_boundary_key",
            sa.Column("dataset", sa.String(length=100), nullable=False),
            sa.Column(
                "record_digest", sa.String(length=32), nullable=False, comment="sha256(primary key, cursor) prefix"
            ),
            sa.Column("cursor_value", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("dataset", "record_digest"),
            comment="records staged at or within the lag before the watermark; re-reads of them are dropped",
        )
    if not _has_table("ingest_file"):
        op.create_table(
            "ingest_file",
            sa.Column("dataset", sa.String(length=100), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("file_name", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("dataset", "sha256"),
            comment="dropped files by content hash: each is ingested once, or set aside whole with its reason",
        )
    if not _has_table("ingest_watermark"):
        op.create_table(
            "ingest_watermark",
            sa.Column("dataset", sa.String(length=100), nullable=False),
            sa.Column(
                "cursor_value",
                sa.String(length=64),
                nullable=False,
                comment="largest staged cursor value, as the source writes it",
            ),
            sa.Column("position", sa.Text(), nullable=True, comment="last chunk position (JSON), for operators"),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("dataset"),
            comment="per dataset: how far incremental ingest has durably staged",
        )
    if not _has_table("link_batch"):
        op.create_table(
            "link_batch",
            sa.Column(
                "dataset",
                sa.String(length=100).with_variant(sa.String(length=100, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column(
                "batch_id",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column("content_hash", sa.String(length=64), nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("dataset", "batch_id", "content_hash"),
        )
    if not _has_table("link_event"):
        op.create_table(
            "link_event",
            sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=8), nullable=False, comment="merge | split"),
            sa.Column(
                "person_key",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
                comment="the key that merged away, or split off",
            ),
            sa.Column(
                "survivor_key",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
            comment="合并与拆分 / identity events consumers follow",
        )
    if not _has_table("link_identity"):
        op.create_table(
            "link_identity",
            sa.Column(
                "link_token",
                sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
                nullable=False,
                comment="HMAC of a valid ID number (linkage domain)",
            ),
            sa.Column(
                "person_key",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column("key_version", sa.Integer(), nullable=False),
            sa.Column(
                "id_ciphertext", sa.Text(), nullable=True, comment="AES-SIV of the ID (linkage_id), for re-keying"
            ),
            sa.PrimaryKeyConstraint("link_token"),
            comment="身份索引 / identity index: link token -> person key (internal)",
        )
        op.create_index(op.f("ix_link_identity_person_key"), "link_identity", ["person_key"], unique=False)
    if not _has_table("link_person"):
        op.create_table(
            "link_person",
            sa.Column(
                "person_key",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
                comment="random; derived from no personal value",
            ),
            sa.Column("created_run", sa.Integer(), nullable=False),
            sa.Column(
                "merged_into",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=True,
                comment="the surviving key after a merge",
            ),
            sa.PrimaryKeyConstraint("person_key"),
            comment="每个人一个稳定的随机人员键 / every person key ever issued",
        )
    if not _has_table("link_record"):
        op.create_table(
            "link_record",
            sa.Column(
                "dataset",
                sa.String(length=100).with_variant(sa.String(length=100, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column(
                "record_id",
                sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
                nullable=False,
                comment="the staged record id",
            ),
            sa.Column(
                "batch_id",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
                comment="the staged batch it was last seen in",
            ),
            sa.Column(
                "person_key",
                sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
                nullable=False,
            ),
            sa.Column("match_kind", sa.String(length=16), nullable=False, comment="exact | probabilistic | new"),
            sa.Column("match_probability", sa.Float(), nullable=True),
            sa.Column(
                "id_status", sa.String(length=16), nullable=False, comment="valid | certificate | missing | invalid"
            ),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("dataset", "record_id"),
            comment="来源记录 / lineage: each staged record and the person it belongs to",
        )
        op.create_index(op.f("ix_link_record_person_key"), "link_record", ["person_key"], unique=False)
    if not _has_table("link_run"):
        op.create_table(
            "link_run",
            sa.Column("run_id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("model_path", sa.Text(), nullable=True),
            sa.Column("summary", sa.Text(), nullable=True, comment="counts only (JSON)"),
            sa.PrimaryKeyConstraint("run_id"),
        )


def downgrade() -> None:
    op.drop_table("link_run")
    op.drop_index(op.f("ix_link_record_person_key"), table_name="link_record")
    op.drop_table("link_record")
    op.drop_table("link_person")
    op.drop_index(op.f("ix_link_identity_person_key"), table_name="link_identity")
    op.drop_table("link_identity")
    op.drop_table("link_event")
    op.drop_table("link_batch")
    op.drop_table("ingest_watermark")
    op.drop_table("ingest_file")
    op.drop_table("ingest_boundary_key")
    op.drop_table("audit_head")
