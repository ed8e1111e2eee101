"""The published model (schemas.unified): core, sensitive and release tiers, lineage, publish batches, change log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIERS = ("core", "sensitive", "release")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for tier in TIERS:
            op.execute(f"CREATE SCHEMA IF NOT EXISTS {tier}")
    op.create_table(
        "birth_registration",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="记录编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="母亲人员键",
        ),
        sa.Column("child_name_masked", sa.String(length=64), nullable=True, comment="婴儿姓名（掩码）"),
        sa.Column("child_id_number_masked", sa.String(length=32), nullable=True, comment="婴儿公民身份号码（掩码）"),
        sa.Column("child_sex", sa.String(length=1), nullable=True, comment="婴儿性别"),
        sa.Column("child_birth_year", sa.Integer(), nullable=True, comment="出生年份"),
        sa.Column("birth_order", sa.Integer(), nullable=True, comment="孩次"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_birth_registration")),
        schema="core",
        comment="出生登记",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "新生儿落户与母婴服务",
        },
    )
    op.create_index(
        op.f("ix_birth_registration_person_key"), "birth_registration", ["person_key"], unique=False, schema="core"
    )
    op.create_table(
        "change_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="序号（单调递增）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.Column("table_name", sa.String(length=64), nullable=False, comment="表名（模式.表）"),
        sa.Column("row_key", sa.String(length=140), nullable=False, comment="行主键（复合键以 | 连接）"),
        sa.Column("operation", sa.String(length=8), nullable=False, comment="操作（insert / update / delete）"),
        sa.Column("community_code", sa.String(length=12), nullable=True, comment="行所属社区代码（行级安全据此过滤）"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_change_log")),
        schema="core",
        comment="变更日志（平台按序号增量同步）",
        info={
            "tier": "core",
            "sharing": "无条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "平台增量同步",
        },
    )
    op.create_index("ix_change_log_publish_id", "change_log", ["publish_id"], unique=False, schema="core")
    op.create_table(
        "consumer_scope",
        sa.Column("role_name", sa.String(length=63), nullable=False, comment="数据库角色名"),
        sa.Column(
            "community_code", sa.String(length=12), nullable=False, comment="社区代码或县级区划代码（* 为全部社区）"
        ),
        sa.PrimaryKeyConstraint("role_name", "community_code", name=op.f("pk_consumer_scope")),
        schema="core",
        comment="数据使用方可读社区范围（行级安全策略依据）",
        info={"tier": "core", "sharing": "不予共享", "readers": ("hub_privacy_officer",), "purpose": "行级安全"},
    )
    op.create_table(
        "dibao_household",
        sa.Column(
            "dibao_household_key",
            sa.String(length=16).with_variant(sa.String(length=16, collation="C"), "postgresql"),
            nullable=False,
            comment="低保户编号（保形加密）",
        ),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("area_type", sa.String(length=4), nullable=True, comment="城乡类别"),
        sa.Column("member_count", sa.Integer(), nullable=False, comment="在保人数"),
        sa.Column("monthly_total", sa.Numeric(precision=12, scale=2), nullable=False, comment="在保成员月保障金额合计"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("dibao_household_key", name=op.f("pk_dibao_household")),
        schema="core",
        comment="最低生活保障家庭",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "低保按户核对",
        },
    )
    op.create_table(
        "dibao_membership",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="保障成员编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column(
            "dibao_household_key",
            sa.String(length=16).with_variant(sa.String(length=16, collation="C"), "postgresql"),
            nullable=False,
            comment="低保户编号（保形加密）",
        ),
        sa.Column("relation_to_head", sa.String(length=8), nullable=True, comment="与户主关系"),
        sa.Column("area_type", sa.String(length=4), nullable=True, comment="城乡类别"),
        sa.Column("monthly_amount", sa.Numeric(precision=10, scale=2), nullable=True, comment="月保障金额"),
        sa.Column("start_date", sa.Date(), nullable=True, comment="纳入保障日期"),
        sa.Column("status", sa.String(length=4), nullable=False, comment="保障状态"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_dibao_membership")),
        schema="core",
        comment="最低生活保障成员",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "低保资格核对、应退则退",
        },
    )
    op.create_index(
        op.f("ix_dibao_membership_person_key"), "dibao_membership", ["person_key"], unique=False, schema="core"
    )
    op.create_table(
        "employment_registration",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="登记记录号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("registration_type", sa.String(length=4), nullable=False, comment="登记类型"),
        sa.Column("registered_on", sa.Date(), nullable=True, comment="登记日期"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_employment_registration")),
        schema="core",
        comment="就业失业登记",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "就业服务、家庭经济状况核对",
        },
    )
    op.create_index(
        op.f("ix_employment_registration_person_key"),
        "employment_registration",
        ["person_key"],
        unique=False,
        schema="core",
    )
    op.create_table(
        "household",
        sa.Column(
            "household_key",
            sa.String(length=16).with_variant(sa.String(length=16, collation="C"), "postgresql"),
            nullable=False,
            comment="户号（保形加密，当前密钥版本）",
        ),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("member_count", sa.Integer(), nullable=False, comment="户内人数（在册）"),
        sa.Column(
            "head_person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=True,
            comment="户主人员键",
        ),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("household_key", name=op.f("pk_household")),
        schema="core",
        comment="家庭电子档案（户籍户）",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "按户服务与家庭经济状况核对",
        },
    )
    op.create_table(
        "household_member",
        sa.Column(
            "household_key",
            sa.String(length=16).with_variant(sa.String(length=16, collation="C"), "postgresql"),
            nullable=False,
            comment="户号（保形加密，当前密钥版本）",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键",
        ),
        sa.Column("relation_to_head", sa.String(length=8), nullable=True, comment="与户主关系"),
        sa.Column("status", sa.String(length=4), nullable=False, comment="户籍状态"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("household_key", "person_key", name=op.f("pk_household_member")),
        schema="core",
        comment="家庭成员关系",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "按户服务与家庭经济状况核对",
        },
    )
    op.create_table(
        "hukou_registration",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="人口记录编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column(
            "household_key",
            sa.String(length=16).with_variant(sa.String(length=16, collation="C"), "postgresql"),
            nullable=False,
            comment="户号（保形加密）",
        ),
        sa.Column("relation_to_head", sa.String(length=8), nullable=True, comment="与户主关系"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("status", sa.String(length=4), nullable=False, comment="户籍状态"),
        sa.Column("death_date", sa.Date(), nullable=True, comment="死亡日期"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_hukou_registration")),
        schema="core",
        comment="户籍人口登记",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "户籍核对、应退则退",
        },
    )
    op.create_index(
        op.f("ix_hukou_registration_person_key"), "hukou_registration", ["person_key"], unique=False, schema="core"
    )
    op.create_table(
        "identity_event",
        sa.Column("event_id", sa.Integer(), autoincrement=False, nullable=False, comment="事件编号（来自身份关联）"),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="类型（merge 合并 / split 拆分）"),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="合并掉或拆出的人员键",
        ),
        sa.Column(
            "survivor_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="存续人员键",
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, comment="发生时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_identity_event")),
        schema="core",
        comment="人员键合并与拆分事件",
        info={
            "tier": "core",
            "sharing": "无条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "平台同步人员键变化",
        },
    )
    op.create_table(
        "insurance_participation",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="参保记录号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("insurance_type", sa.String(length=16), nullable=False, comment="险种"),
        sa.Column("status", sa.String(length=8), nullable=False, comment="参保状态"),
        sa.Column("start_date", sa.Date(), nullable=True, comment="参保日期"),
        sa.Column("monthly_benefit", sa.Numeric(precision=10, scale=2), nullable=True, comment="月领取金额"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码（取自人员主要社区）"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_insurance_participation")),
        schema="core",
        comment="社会保险参保",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "社保服务、家庭经济状况核对",
        },
    )
    op.create_index(
        op.f("ix_insurance_participation_person_key"),
        "insurance_participation",
        ["person_key"],
        unique=False,
        schema="core",
    )
    op.create_table(
        "migrant_registration",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="登记编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("origin_province", sa.String(length=6), nullable=True, comment="户籍地区划（省级）"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="现住社区代码"),
        sa.Column("registered_on", sa.Date(), nullable=True, comment="登记日期"),
        sa.Column("departed_on", sa.Date(), nullable=True, comment="离开日期"),
        sa.Column("permit_no", sa.String(length=16), nullable=True, comment="居住证号（保形加密）"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_migrant_registration")),
        schema="core",
        comment="流动人口登记（流动人口基础数据库）",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "流动人口服务管理",
        },
    )
    op.create_index(
        op.f("ix_migrant_registration_person_key"), "migrant_registration", ["person_key"], unique=False, schema="core"
    )
    op.create_table(
        "person",
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("name_masked", sa.String(length=64), nullable=True, comment="姓名（掩码）"),
        sa.Column("id_number_masked", sa.String(length=32), nullable=True, comment="公民身份号码（掩码）"),
        sa.Column("phone_masked", sa.String(length=32), nullable=True, comment="联系电话（掩码）"),
        sa.Column("sex", sa.String(length=1), nullable=True, comment="性别"),
        sa.Column("birth_year", sa.Integer(), nullable=True, comment="出生年份"),
        sa.Column("ethnicity", sa.String(length=16), nullable=True, comment="民族"),
        sa.Column("residence_type", sa.String(length=8), nullable=False, comment="居住类型（户籍/流动/其他）"),
        sa.Column(
            "community_code",
            sa.String(length=12),
            nullable=False,
            comment="主要社区代码（户籍社区，否则现住社区，否则最近记录的社区）",
        ),
        sa.Column("county_code", sa.String(length=6), nullable=False, comment="县级区划代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("person_key", name=op.f("pk_person")),
        schema="core",
        comment="居民电子档案（人员）",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "前台一口受理、后台协同办理",
        },
    )
    op.create_table(
        "publish_batch",
        sa.Column("publish_id", sa.Integer(), autoincrement=True, nullable=False, comment="发布批次号"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, comment="开始时间"),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True, comment="完成时间"),
        sa.Column("link_run_id", sa.Integer(), nullable=True, comment="所依据的身份关联运行号"),
        sa.Column("staged_batches", sa.Integer(), nullable=False, comment="读取的暂存批次数"),
        sa.Column("changes", sa.Integer(), nullable=False, comment="变更日志行数"),
        sa.Column("summary", sa.Text(), nullable=True, comment="各表行数与变更数（JSON，仅计数）"),
        sa.PrimaryKeyConstraint("publish_id", name=op.f("pk_publish_batch")),
        schema="core",
        comment="发布批次",
        info={
            "tier": "core",
            "sharing": "无条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "平台同步与审计",
        },
    )
    op.create_table(
        "record_lineage",
        sa.Column(
            "dataset",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="来源数据集（部门.数据集）",
        ),
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="来源记录编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column(
            "match_kind",
            sa.String(length=16),
            nullable=False,
            comment="关联方式（exact 身份证号 / probabilistic 概率匹配 / new 新建）",
        ),
        sa.Column("match_probability", sa.Float(), nullable=True, comment="概率匹配的置信度"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="记录所属社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("dataset", "record_key", name=op.f("pk_record_lineage")),
        schema="core",
        comment="来源记录与人员的对应（数据血缘）",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "追溯每条记录的来源部门与关联方式",
        },
    )
    op.create_index(op.f("ix_record_lineage_person_key"), "record_lineage", ["person_key"], unique=False, schema="core")
    op.create_table(
        "social_relief",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="救助记录编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("category", sa.String(length=8), nullable=False, comment="救助类别"),
        sa.Column("monthly_amount", sa.Numeric(precision=10, scale=2), nullable=True, comment="月发放金额"),
        sa.Column("start_date", sa.Date(), nullable=True, comment="起始日期"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_social_relief")),
        schema="core",
        comment="特困供养、高龄津贴、孤儿保障对象",
        info={
            "tier": "core",
            "sharing": "有条件共享",
            "readers": ("hub_platform", "hub_front_desk", "hub_back_office", "hub_privacy_officer"),
            "purpose": "救助资格核对、避免重复救助",
        },
    )
    op.create_index(op.f("ix_social_relief_person_key"), "social_relief", ["person_key"], unique=False, schema="core")
    op.create_table(
        "disability",
        sa.Column("category", sa.String(length=8), nullable=False, comment="残疾类别"),
        sa.Column("consumer", sa.String(length=63), nullable=False, comment="数据使用方（每方一个令牌域）"),
        sa.Column(
            "person_token",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="人员令牌（按使用方独立密钥派生，不可跨方关联）",
        ),
        sa.Column("age_band", sa.String(length=8), nullable=False, comment="年龄段（5岁一组）"),
        sa.Column("sex", sa.String(length=1), nullable=False, comment="性别"),
        sa.Column("county_code", sa.String(length=6), nullable=False, comment="县级区划代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("category", "consumer", "person_token", name=op.f("pk_disability")),
        schema="release",
        comment="残疾人统计发布（泛化、k-匿名、l-多样性）",
        info={
            "tier": "release",
            "sharing": "无条件共享",
            "readers": ("hub_statistics", "hub_privacy_officer"),
            "purpose": "残疾人事业统计",
        },
    )
    op.create_table(
        "resident",
        sa.Column("residence_type", sa.String(length=8), nullable=False, comment="居住类型（户籍/流动/其他）"),
        sa.Column("consumer", sa.String(length=63), nullable=False, comment="数据使用方（每方一个令牌域）"),
        sa.Column(
            "person_token",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="人员令牌（按使用方独立密钥派生，不可跨方关联）",
        ),
        sa.Column("age_band", sa.String(length=8), nullable=False, comment="年龄段（5岁一组）"),
        sa.Column("sex", sa.String(length=1), nullable=False, comment="性别"),
        sa.Column("county_code", sa.String(length=6), nullable=False, comment="县级区划代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("consumer", "person_token", name=op.f("pk_resident")),
        schema="release",
        comment="人口统计发布（泛化、k-匿名）",
        info={
            "tier": "release",
            "sharing": "无条件共享",
            "readers": ("hub_statistics", "hub_privacy_officer"),
            "purpose": "人口统计与对外共享",
        },
    )
    op.create_table(
        "social_assistance",
        sa.Column("programme", sa.String(length=8), nullable=False, comment="救助项目（低保/特困供养/高龄津贴/孤儿）"),
        sa.Column("consumer", sa.String(length=63), nullable=False, comment="数据使用方（每方一个令牌域）"),
        sa.Column(
            "person_token",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="人员令牌（按使用方独立密钥派生，不可跨方关联）",
        ),
        sa.Column("age_band", sa.String(length=8), nullable=False, comment="年龄段（5岁一组）"),
        sa.Column("sex", sa.String(length=1), nullable=False, comment="性别"),
        sa.Column("county_code", sa.String(length=6), nullable=False, comment="县级区划代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("programme", "consumer", "person_token", name=op.f("pk_social_assistance")),
        schema="release",
        comment="社会救助统计发布（泛化、k-匿名、l-多样性）",
        info={
            "tier": "release",
            "sharing": "无条件共享",
            "readers": ("hub_statistics", "hub_privacy_officer"),
            "purpose": "社会救助统计",
        },
    )
    op.create_table(
        "community_correction",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="矫正编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("correction_type_enc", sa.Text(), nullable=False, comment="矫正类别（随机化认证加密）"),
        sa.Column("start_date_enc", sa.Text(), nullable=False, comment="矫正起始日期（随机化认证加密）"),
        sa.Column("end_date_enc", sa.Text(), nullable=False, comment="矫正结束日期（随机化认证加密）"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column("source_updated_at", sa.DateTime(), nullable=True, comment="更新时间"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_community_correction")),
        schema="sensitive",
        comment="社区矫正对象（依法保密，仅司法与授权后台可读）",
        info={
            "tier": "sensitive",
            "sharing": "不予共享",
            "readers": ("hub_corrections_reader",),
            "purpose": "社区矫正协同监管（仅司法及经授权后台）",
        },
    )
    op.create_index(
        op.f("ix_community_correction_person_key"),
        "community_correction",
        ["person_key"],
        unique=False,
        schema="sensitive",
    )
    op.create_table(
        "disability_certificate",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="残疾人证号（保形加密，当前密钥版本）",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键（稳定随机键，不含任何个人信息）",
        ),
        sa.Column("category", sa.String(length=8), nullable=False, comment="残疾类别"),
        sa.Column("level", sa.String(length=1), nullable=False, comment="残疾等级"),
        sa.Column("issued_on", sa.Date(), nullable=True, comment="发证日期"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_disability_certificate")),
        schema="sensitive",
        comment="残疾人证持证人员（敏感个人信息）",
        info={
            "tier": "sensitive",
            "sharing": "有条件共享",
            "readers": ("hub_back_office", "hub_privacy_officer"),
            "purpose": "残疾人两项补贴与康复服务（限授权用途）",
        },
    )
    op.create_index(
        op.f("ix_disability_certificate_person_key"),
        "disability_certificate",
        ["person_key"],
        unique=False,
        schema="sensitive",
    )
    op.create_table(
        "family_planning",
        sa.Column(
            "record_key",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
            comment="记录编号",
        ),
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="母亲人员键",
        ),
        sa.Column("family_type", sa.String(length=16), nullable=False, comment="计生家庭类别"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("record_key", name=op.f("pk_family_planning")),
        schema="sensitive",
        comment="计划生育家庭类别（含特殊家庭，敏感个人信息）",
        info={
            "tier": "sensitive",
            "sharing": "有条件共享",
            "readers": ("hub_back_office", "hub_privacy_officer"),
            "purpose": "计生特殊家庭扶助（限授权用途）",
        },
    )
    op.create_index(
        op.f("ix_family_planning_person_key"), "family_planning", ["person_key"], unique=False, schema="sensitive"
    )
    op.create_table(
        "person_contact",
        sa.Column(
            "person_key",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
            comment="人员键",
        ),
        sa.Column("name_enc", sa.Text(), nullable=True, comment="姓名（随机化认证加密）"),
        sa.Column("phone_enc", sa.Text(), nullable=True, comment="联系电话（随机化认证加密）"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="主要社区代码"),
        sa.Column(
            "row_hash",
            sa.String(length=32),
            nullable=False,
            comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）",
        ),
        sa.Column("publish_id", sa.Integer(), nullable=False, comment="最后写入本行的发布批次号"),
        sa.PrimaryKeyConstraint("person_key", name=op.f("pk_person_contact")),
        schema="sensitive",
        comment="姓名与联系电话（随机化认证加密，经授权说明理由后方可查看）",
        info={
            "tier": "sensitive",
            "sharing": "不予共享",
            "readers": ("hub_back_office", "hub_privacy_officer"),
            "purpose": "后台协同办理时经授权查看",
        },
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":  # the cross-department views (made from checks.yaml) read these tables
        for (view,) in bind.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall():
            op.execute(f'DROP VIEW IF EXISTS "{view}"')
    else:
        for tier in TIERS:
            op.execute(f"DROP SCHEMA IF EXISTS {tier} CASCADE")
        return
    op.drop_table("person_contact", schema="sensitive")
    op.drop_index(op.f("ix_family_planning_person_key"), table_name="family_planning", schema="sensitive")
    op.drop_table("family_planning", schema="sensitive")
    op.drop_index(op.f("ix_disability_certificate_person_key"), table_name="disability_certificate", schema="sensitive")
    op.drop_table("disability_certificate", schema="sensitive")
    op.drop_index(op.f("ix_community_correction_person_key"), table_name="community_correction", schema="sensitive")
    op.drop_table("community_correction", schema="sensitive")
    op.drop_table("social_assistance", schema="release")
    op.drop_table("resident", schema="release")
    op.drop_table("disability", schema="release")
    op.drop_index(op.f("ix_social_relief_person_key"), table_name="social_relief", schema="core")
    op.drop_table("social_relief", schema="core")
    op.drop_index(op.f("ix_record_lineage_person_key"), table_name="record_lineage", schema="core")
    op.drop_table("record_lineage", schema="core")
    op.drop_table("publish_batch", schema="core")
    op.drop_table("person", schema="core")
    op.drop_index(op.f("ix_migrant_registration_person_key"), table_name="migrant_registration", schema="core")
    op.drop_table("migrant_registration", schema="core")
    op.drop_index(op.f("ix_insurance_participation_person_key"), table_name="insurance_participation", schema="core")
    op.drop_table("insurance_participation", schema="core")
    op.drop_table("identity_event", schema="core")
    op.drop_index(op.f("ix_hukou_registration_person_key"), table_name="hukou_registration", schema="core")
    op.drop_table("hukou_registration", schema="core")
    op.drop_table("household_member", schema="core")
    op.drop_table("household", schema="core")
    op.drop_index(op.f("ix_employment_registration_person_key"), table_name="employment_registration", schema="core")
    op.drop_table("employment_registration", schema="core")
    op.drop_index(op.f("ix_dibao_membership_person_key"), table_name="dibao_membership", schema="core")
    op.drop_table("dibao_membership", schema="core")
    op.drop_table("dibao_household", schema="core")
    op.drop_table("consumer_scope", schema="core")
    op.drop_index("ix_change_log_publish_id", table_name="change_log", schema="core")
    op.drop_table("change_log", schema="core")
    op.drop_index(op.f("ix_birth_registration_person_key"), table_name="birth_registration", schema="core")
    op.drop_table("birth_registration", schema="core")
