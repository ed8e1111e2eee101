"""The service's own tables (schema ``service``, PostgreSQL only; migration 0004): API consumers, cases, reveals.

They hold no personal value: consumers are named by the hub operator, cases point at published records by
their keys, reveal requests name a record and a field. ``case`` carries the row's ``community_code`` and the
same row-level security as the published tables, so a back-office role works only the cases it may see.
The lookup index (ID token -> person) is ``publish.lookup.lookup_index``, in the same schema.
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA = "service"


metadata = sa.MetaData(
    naming_convention={"ix": "ix_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s",
                       "uq": "uq_%(table_name)s_%(column_0_name)s", "ck": "ck_%(table_name)s_%(constraint_name)s"}
)  # fmt: skip

api_consumer = sa.Table(
    "api_consumer",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True, comment="使用方名称（操作员或平台）"),
    sa.Column("label", sa.Text, nullable=False, comment="说明"),
    sa.Column("role", sa.String(63), nullable=False, comment="请求运行所用的数据库角色"),
    sa.Column("key_id", sa.String(16), nullable=False, unique=True, comment="API 密钥编号（公开部分）"),
    sa.Column("key_hash", sa.Text, nullable=False, comment="API 密钥的 Argon2id 摘要（密钥本身不保存）"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, comment="创建时间"),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True, comment="吊销时间"),
    schema=SCHEMA,
    comment="服务的数据使用方与 API 密钥摘要",
)

case = sa.Table(
    "case",
    metadata,
    sa.Column("case_id", sa.BigInteger, sa.Identity(), primary_key=True, comment="工单号"),
    sa.Column("conflict_key", sa.Text, nullable=False, unique=True, comment="规则|主体表|主体记录|证据表|证据记录"),
    sa.Column("rule_id", sa.String(64), nullable=False, comment="比对规则"),
    sa.Column("rule_label", sa.Text, nullable=False, comment="规则说明"),
    sa.Column("person_key", sa.String(32), nullable=False, index=True, comment="人员键"),
    sa.Column("community_code", sa.String(12), nullable=False, comment="社区代码（行级安全据此过滤）"),
    sa.Column("subject_table", sa.String(64), nullable=False, comment="被核对的记录所在表"),
    sa.Column("subject_key", sa.String(140), nullable=False, comment="被核对的记录"),
    sa.Column("evidence_table", sa.String(64), nullable=True, comment="证据记录所在表"),
    sa.Column("evidence_key", sa.String(140), nullable=True, comment="证据记录"),
    sa.Column("dual_control", sa.Boolean, nullable=False, comment="双人复核（待遇退出：认领人不得结案）"),
    sa.Column("state", sa.String(12), nullable=False, comment="状态 open/claimed/resolved/dismissed"),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, comment="立案时间"),
    sa.Column("claimed_by", sa.String(63), nullable=True, comment="认领人"),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True, comment="认领时间"),
    sa.Column("closed_by", sa.String(63), nullable=True, comment="结案人"),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True, comment="结案时间"),
    sa.Column("close_reason", sa.Text, nullable=True, comment="结案理由"),
    sa.Column("gone_at", sa.DateTime(timezone=True), nullable=True, comment="冲突在最新发布中消失的时间"),
    sa.CheckConstraint("state IN ('open', 'claimed', 'resolved', 'dismissed')", name="state"),
    sa.CheckConstraint("NOT dual_control OR closed_by IS NULL OR closed_by <> claimed_by", name="dual_control"),
    schema=SCHEMA,
    comment="后台协同办理工单（跨部门比对冲突）",
)

case_event = sa.Table(
    "case_event",
    metadata,
    sa.Column("event_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("case_id", sa.BigInteger, nullable=False, index=True, comment="工单号"),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), comment="时间"),
    sa.Column("operator", sa.String(63), nullable=False, comment="操作员"),
    sa.Column("action", sa.String(12), nullable=False, comment="claim/resolve/dismiss"),
    sa.Column("from_state", sa.String(12), nullable=False),
    sa.Column("to_state", sa.String(12), nullable=False),
    sa.Column("reason", sa.Text, nullable=True, comment="理由"),
    schema=SCHEMA,
    comment="工单状态变更记录",
)

reveal_request = sa.Table(
    "reveal_request",
    metadata,
    sa.Column("request_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("table_name", sa.String(64), nullable=False, comment="记录所在表"),
    sa.Column("row_key", sa.String(140), nullable=False, comment="记录主键"),
    sa.Column("field", sa.String(32), nullable=False, comment="申请查看的字段"),
    sa.Column("requested_by", sa.String(63), nullable=False, comment="申请人"),
    sa.Column("reason", sa.Text, nullable=False, comment="理由"),
    sa.Column("case_no", sa.String(64), nullable=False, comment="业务编号"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("state", sa.String(12), nullable=False, comment="pending/approved/revealed"),
    schema=SCHEMA,
    comment="需双人批准的查看申请（社区矫正字段）",
)

reveal_approval = sa.Table(
    "reveal_approval",
    metadata,
    sa.Column("request_id", sa.BigInteger, primary_key=True),
    sa.Column("approver", sa.String(63), primary_key=True, comment="批准人"),
    sa.Column("reason", sa.Text, nullable=False, comment="理由"),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema=SCHEMA,
    comment="查看申请的批准",
)
