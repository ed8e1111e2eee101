"""The front-desk and back-office service's schema (PostgreSQL only; the service refuses SQLite, which has no
roles): API consumers with key hashes, the lookup index, cases of the worklist with their events, reveal
requests and approvals; the service's own login role and its grants.

- ``hub_service`` logs in, inherits nothing (NOINHERIT) and may SET ROLE to the consumer roles
  (``publish.lookup.grant_service_roles`` adds the platform roles), so a request sees what its consumer's
  role sees and nothing more.
- ``service.lookup_index`` is readable by ``hub_service`` only; no consumer role has USAGE on the data.
- ``service.case`` has the published tables' row-level security: a back-office role works the cases of
  its communities; only the service login (syncing cases after a publish) writes new ones.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SERVICE, SCHEMA = "hub_service", "service"
FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER = "hub_front_desk", "hub_back_office", "hub_privacy_officer"
MINE = "pg_has_role(current_user, s.role_name, 'USAGE')"
SCOPE = (
    f"community_code IN (SELECT s.community_code FROM core.consumer_scope s WHERE {MINE}) "
    f"OR left(community_code, 6) IN (SELECT s.community_code FROM core.consumer_scope s WHERE {MINE}) "
    f"OR EXISTS (SELECT 1 FROM core.consumer_scope s WHERE {MINE} AND s.community_code = '*')"
)


# A lookup in one statement (SECURITY INVOKER, run by the service's login): the consumer of a key id and the
# person the ID's token names, read as the service; then SET LOCAL ROLE to the consumer's role, and the person
# read under it (row-level security applies: plpgsql plans each statement as the role that runs it). The same
# statements run whether or not the token is known. The service checks the key and answers; nothing here does.
LOOKUP_FUNCTION = """
CREATE OR REPLACE FUNCTION service.lookup(p_token text, p_key_id text)
RETURNS TABLE (name text, role text, key_hash text, revoked_at timestamptz, person json)
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    found_key text;
    shown json;
BEGIN
    SELECT a.name, a.role, a.key_hash, a.revoked_at INTO c FROM service.api_consumer a WHERE a.key_id = p_key_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT l.person_key INTO found_key FROM service.lookup_index l WHERE l.lookup_token = p_token;
    IF c.revoked_at IS NULL THEN
        PERFORM set_config('role', c.role, true);
        SELECT row_to_json(p) INTO shown FROM (
            SELECT person_key, name_masked, id_number_masked, phone_masked, sex, birth_year, ethnicity,
                   residence_type, community_code, county_code
            FROM core.person WHERE person_key = coalesce(found_key, '')
        ) p;
        PERFORM set_config('role', 'none', true);
    END IF;
    RETURN QUERY SELECT c.name::text, c.role::text, c.key_hash, c.revoked_at, shown;
END
$fn$
"""


def _key(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _at(name: str, nullable: bool = True, comment: str | None = None, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        comment=comment,
        server_default=sa.func.now() if default else None,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(
        f"DO $$ BEGIN CREATE ROLE {SERVICE} LOGIN NOINHERIT; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
    op.create_table(
        "lookup_index",
        sa.Column("lookup_token", _key(64), nullable=False, comment="身份证号的查询令牌（服务专用密钥域）"),
        sa.Column("person_key", _key(32), nullable=False, comment="人员键"),
        sa.Column("key_version", sa.Integer(), nullable=False, comment="令牌的密钥版本"),
        sa.PrimaryKeyConstraint("lookup_token", name=op.f("pk_lookup_index")),
        schema=SCHEMA,
        comment="前台按身份证查询的索引（仅服务自身可读，不进入变更日志）",
    )
    op.create_table(
        "api_consumer",
        sa.Column("name", sa.String(63), nullable=False, comment="使用方名称（操作员或平台）"),
        sa.Column("label", sa.Text(), nullable=False, comment="说明"),
        sa.Column("role", sa.String(63), nullable=False, comment="请求运行所用的数据库角色"),
        sa.Column("key_id", sa.String(16), nullable=False, comment="API 密钥编号（公开部分）"),
        sa.Column("key_hash", sa.Text(), nullable=False, comment="API 密钥的 Argon2id 摘要（密钥本身不保存）"),
        _at("created_at", nullable=False, comment="创建时间"),
        _at("revoked_at", comment="吊销时间"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_api_consumer")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_consumer_key_id")),
        schema=SCHEMA,
        comment="服务的数据使用方与 API 密钥摘要",
    )
    op.create_table(
        "case",
        sa.Column("case_id", sa.BigInteger(), sa.Identity(), nullable=False, comment="工单号"),
        sa.Column("conflict_key", sa.Text(), nullable=False, comment="规则|主体表|主体记录|证据表|证据记录"),
        sa.Column("rule_id", sa.String(64), nullable=False, comment="比对规则"),
        sa.Column("rule_label", sa.Text(), nullable=False, comment="规则说明"),
        sa.Column("person_key", sa.String(32), nullable=False, comment="人员键"),
        sa.Column("community_code", sa.String(12), nullable=False, comment="社区代码（行级安全据此过滤）"),
        sa.Column("subject_table", sa.String(64), nullable=False, comment="被核对的记录所在表"),
        sa.Column("subject_key", sa.String(140), nullable=False, comment="被核对的记录"),
        sa.Column("evidence_table", sa.String(64), nullable=True, comment="证据记录所在表"),
        sa.Column("evidence_key", sa.String(140), nullable=True, comment="证据记录"),
        sa.Column("dual_control", sa.Boolean(), nullable=False, comment="双人复核（待遇退出：认领人不得结案）"),
        sa.Column("state", sa.String(12), nullable=False, comment="状态 open/claimed/resolved/dismissed"),
        _at("opened_at", nullable=False, comment="立案时间"),
        sa.Column("claimed_by", sa.String(63), nullable=True, comment="认领人"),
        _at("claimed_at", comment="认领时间"),
        sa.Column("closed_by", sa.String(63), nullable=True, comment="结案人"),
        _at("closed_at", comment="结案时间"),
        sa.Column("close_reason", sa.Text(), nullable=True, comment="结案理由"),
        _at("gone_at", comment="冲突在最新发布中消失的时间"),
        sa.CheckConstraint("state IN ('open', 'claimed', 'resolved', 'dismissed')", name=op.f("ck_case_state")),
        sa.CheckConstraint(
            "NOT dual_control OR closed_by IS NULL OR closed_by <> claimed_by", name=op.f("ck_case_dual_control")
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_case")),
        sa.UniqueConstraint("conflict_key", name=op.f("uq_case_conflict_key")),
        schema=SCHEMA,
        comment="后台协同办理工单（跨部门比对冲突）",
    )
    op.create_index(op.f("ix_case_person_key"), "case", ["person_key"], unique=False, schema=SCHEMA)
    op.create_table(
        "case_event",
        sa.Column("event_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False, comment="工单号"),
        _at("at", nullable=False, comment="时间", default=True),
        sa.Column("operator", sa.String(63), nullable=False, comment="操作员"),
        sa.Column("action", sa.String(12), nullable=False, comment="claim/resolve/dismiss"),
        sa.Column("from_state", sa.String(12), nullable=False),
        sa.Column("to_state", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True, comment="理由"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_case_event")),
        schema=SCHEMA,
        comment="工单状态变更记录",
    )
    op.create_index(op.f("ix_case_event_case_id"), "case_event", ["case_id"], unique=False, schema=SCHEMA)
    op.create_table(
        "reveal_request",
        sa.Column("request_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False, comment="记录所在表"),
        sa.Column("row_key", sa.String(140), nullable=False, comment="记录主键"),
        sa.Column("field", sa.String(32), nullable=False, comment="申请查看的字段"),
        sa.Column("requested_by", sa.String(63), nullable=False, comment="申请人"),
        sa.Column("reason", sa.Text(), nullable=False, comment="理由"),
        sa.Column("case_no", sa.String(64), nullable=False, comment="业务编号"),
        _at("created_at", nullable=False, default=True),
        sa.Column("state", sa.String(12), nullable=False, comment="pending/approved/revealed"),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_reveal_request")),
        schema=SCHEMA,
        comment="需双人批准的查看申请（社区矫正字段）",
    )
    op.create_table(
        "reveal_approval",
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("approver", sa.String(63), nullable=False, comment="批准人"),
        sa.Column("reason", sa.Text(), nullable=False, comment="理由"),
        _at("at", nullable=False, default=True),
        sa.PrimaryKeyConstraint("request_id", "approver", name=op.f("pk_reveal_approval")),
        schema=SCHEMA,
        comment="查看申请的批准",
    )
    s = SCHEMA
    op.execute(f"GRANT USAGE ON SCHEMA {s} TO {SERVICE}, {FRONT_DESK}, {BACK_OFFICE}, {PRIVACY_OFFICER}")
    op.execute(f"GRANT SELECT ON {s}.lookup_index, {s}.api_consumer TO {SERVICE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {s}.case, {s}.reveal_request, {s}.reveal_approval TO {SERVICE}")
    op.execute(f"GRANT SELECT, INSERT ON {s}.case_event TO {SERVICE}, {BACK_OFFICE}")
    op.execute(f"GRANT SELECT ON {s}.case, {s}.case_event TO {PRIVACY_OFFICER}")
    op.execute(f"GRANT SELECT ON {s}.case TO {FRONT_DESK}")  # the clerk sees that a case is open, not its work
    op.execute(
        f"GRANT SELECT, UPDATE (state, claimed_by, claimed_at, closed_by, closed_at, close_reason) "
        f"ON {s}.case TO {BACK_OFFICE}"
    )
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {SERVICE}, {BACK_OFFICE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON audit_head TO {SERVICE}")  # the audit chain's head
    op.execute(LOOKUP_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {s}.lookup(text, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {s}.lookup(text, text) TO {SERVICE}")
    op.execute(f"ALTER TABLE {s}.case ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY community_scope ON {s}.case FOR ALL USING ({SCOPE}) WITH CHECK ({SCOPE})")
    op.execute(f"CREATE POLICY service_sync ON {s}.case FOR ALL TO {SERVICE} USING (true) WITH CHECK (true)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    op.execute(f"REVOKE ALL ON audit_head FROM {SERVICE}")
    op.execute(  # roles are cluster-wide: one another hub database still uses stays
        f"DO $$ BEGIN DROP ROLE IF EXISTS {SERVICE}; "
        "EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN NULL; END $$"
    )
