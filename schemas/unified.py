"""The unified community database (统一社区数据库): the published model that community platforms read.

Three schemas, one per privacy tier (DESIGN "three privacy tiers"):

- ``core``: operational e-records keyed by ``person_key`` (the ID token is not published), masked display
  fields, each row carrying the ``community_code`` that row-level security filters on;
- ``sensitive``: disability, family planning and corrections, readable only by the roles granted that purpose;
  values nobody needs to compare are randomised AEAD ciphertexts (``*_enc``);
- ``release``: generalised microdata for statistics and sharing outside the platform (per-consumer tokens).

Every table and column carries a Chinese label (``comment=``); where a column comes from a source contract
its label is the contract's, so the contracts stay the one source of truth. ``info`` on each table holds its
sharing type (国发〔2016〕51号), privacy tier and the roles allowed, which the catalogue and the role
migration read. On SQLite the schemas are mapped away (``SQLITE_SCHEMAS``); table names are unique across them.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas.contract import packaged_contracts

TIERS = ("core", "sensitive", "release")
#: on SQLite every tier lives in the one database file
SQLITE_SCHEMAS: dict[str | None, str | None] = {tier: None for tier in TIERS}

UNCONDITIONAL, CONDITIONAL, NOT_SHARED = "无条件共享", "有条件共享", "不予共享"

# Role names (the role migration creates them; platform roles come from the consumers file).
ROLE_PREFIX = "hub_"
FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER, JUSTICE, STATISTICS = (
    "hub_front_desk",
    "hub_back_office",
    "hub_privacy_officer",
    "hub_justice",
    "hub_statistics",
)
CORRECTIONS_READER = "hub_corrections_reader"  # justice, and back-office operators granted it by name
PLATFORMS = "hub_platform"  # the group role every community platform's role belongs to
FIXED_ROLES = (FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER, JUSTICE, STATISTICS, CORRECTIONS_READER, PLATFORMS)


@cache
def contract_labels() -> dict[str, str]:
    """``table.column`` of the unified model -> the Chinese label its first contract gives it."""
    labels: dict[str, str] = {}
    for contract in packaged_contracts().values():
        for f in contract.fields:
            labels.setdefault(f.unified, f.label)
    return labels


def _label(unified: str) -> str:
    """A column label taken from the contracts (fails at import if a contract stops naming it)."""
    return contract_labels()[unified]


def key(length: int = 32) -> sa.types.TypeEngine[str]:
    """A key column: byte-order ("C") collation on PostgreSQL, so index builds and merges sort fast."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _info(tier: str, sharing: str, readers: tuple[str, ...], purpose: str) -> dict[str, Any]:
    return {"tier": tier, "sharing": sharing, "readers": readers, "purpose": purpose}


_CORE_READERS = (PLATFORMS, FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER)
_BACK = (BACK_OFFICE, PRIVACY_OFFICER)


class Base(DeclarativeBase):
    """Declarative base of the published model."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
        }
    )


def person_ref(label: str = "人员键（稳定随机键，不含任何个人信息）", **kw: Any) -> Mapped[str]:
    return mapped_column(key(32), nullable=False, comment=label, **kw)


def community(label: str = "社区代码") -> Mapped[str]:
    return mapped_column(sa.String(12), nullable=False, comment=label)


def row_hash() -> Mapped[str]:
    return mapped_column(
        sa.String(32), nullable=False, comment="行内容摘要（来自暂存的假名化值，用于判断是否变更；不含明文）"
    )


def publish_id() -> Mapped[int]:
    return mapped_column(sa.Integer, nullable=False, comment="最后写入本行的发布批次号")


# ------------------------------------------------------------------------------------------- core: e-records
class Person(Base):
    """居民电子档案: one row per person, assembled from every department's records."""

    __tablename__ = "person"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "居民电子档案（人员）",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "前台一口受理、后台协同办理"),
        },
    )
    person_key: Mapped[str] = mapped_column(key(32), primary_key=True, comment="人员键（稳定随机键，不含任何个人信息）")
    name_masked: Mapped[str | None] = mapped_column(sa.String(64), comment="姓名（掩码）")
    id_number_masked: Mapped[str | None] = mapped_column(sa.String(32), comment="公民身份号码（掩码）")
    phone_masked: Mapped[str | None] = mapped_column(sa.String(32), comment="联系电话（掩码）")
    sex: Mapped[str | None] = mapped_column(sa.String(1), comment=_label("person.sex"))
    birth_year: Mapped[int | None] = mapped_column(sa.Integer, comment="出生年份")
    ethnicity: Mapped[str | None] = mapped_column(sa.String(16), comment=_label("person.ethnicity"))
    residence_type: Mapped[str] = mapped_column(sa.String(8), comment="居住类型（户籍/流动/其他）")
    community_code: Mapped[str] = community("主要社区代码（户籍社区，否则现住社区，否则最近记录的社区）")
    county_code: Mapped[str] = mapped_column(sa.String(6), comment="县级区划代码")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class Household(Base):
    """家庭电子档案: a hukou household (户) with its community and size."""

    __tablename__ = "household"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "家庭电子档案（户籍户）",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "按户服务与家庭经济状况核对"),
        },
    )
    household_key: Mapped[str] = mapped_column(key(16), primary_key=True, comment="户号（保形加密，当前密钥版本）")
    community_code: Mapped[str] = community()
    member_count: Mapped[int] = mapped_column(sa.Integer, comment="户内人数（在册）")
    head_person_key: Mapped[str | None] = mapped_column(key(32), comment="户主人员键")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class HouseholdMember(Base):
    """家庭成员: who belongs to which hukou household, and how."""

    __tablename__ = "household_member"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "家庭成员关系",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "按户服务与家庭经济状况核对"),
        },
    )
    household_key: Mapped[str] = mapped_column(key(16), primary_key=True, comment="户号（保形加密，当前密钥版本）")
    person_key: Mapped[str] = mapped_column(key(32), primary_key=True, comment="人员键")
    relation_to_head: Mapped[str | None] = mapped_column(
        sa.String(8), comment=_label("hukou_registration.relation_to_head")
    )
    status: Mapped[str] = mapped_column(sa.String(4), comment=_label("hukou_registration.status"))
    community_code: Mapped[str] = community()
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


# ------------------------------------------------------------------------------------------- core: residence
class HukouRegistration(Base):
    """户籍登记: the 公安 hukou record of a person."""

    __tablename__ = "hukou_registration"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "户籍人口登记",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "户籍核对、应退则退"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("hukou_registration.record_id"))
    person_key: Mapped[str] = person_ref(index=True)
    household_key: Mapped[str] = mapped_column(
        key(16), nullable=False, comment=_label("hukou_registration.household_no") + "（保形加密）"
    )
    relation_to_head: Mapped[str | None] = mapped_column(
        sa.String(8), comment=_label("hukou_registration.relation_to_head")
    )
    community_code: Mapped[str] = community(_label("hukou_registration.community_code"))
    status: Mapped[str] = mapped_column(sa.String(4), comment=_label("hukou_registration.status"))
    death_date: Mapped[date | None] = mapped_column(sa.Date, comment=_label("hukou_registration.death_date"))
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("hukou_registration.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class MigrantRegistration(Base):
    """流动人口登记: the migrant-population base database (origin, community, arrival, departure, permit)."""

    __tablename__ = "migrant_registration"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "流动人口登记（流动人口基础数据库）",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "流动人口服务管理"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("migrant_registration.record_id"))
    person_key: Mapped[str] = person_ref(index=True)
    origin_province: Mapped[str | None] = mapped_column(
        sa.String(6), comment=_label("migrant_registration.origin_area") + "（省级）"
    )
    community_code: Mapped[str] = community(_label("migrant_registration.community_code"))
    registered_on: Mapped[date | None] = mapped_column(sa.Date, comment=_label("migrant_registration.registered_on"))
    departed_on: Mapped[date | None] = mapped_column(sa.Date, comment=_label("migrant_registration.departed_on"))
    permit_no: Mapped[str | None] = mapped_column(
        sa.String(16), comment=_label("migrant_registration.permit_no") + "（保形加密）"
    )
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("migrant_registration.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


# ------------------------------------------------------------------------------------------- core: services
class DibaoHousehold(Base):
    """低保户: a minimum-living-allowance household, summed from its members."""

    __tablename__ = "dibao_household"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "最低生活保障家庭",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "低保按户核对"),
        },
    )
    dibao_household_key: Mapped[str] = mapped_column(
        key(16), primary_key=True, comment=_label("dibao_membership.household_id") + "（保形加密）"
    )
    community_code: Mapped[str] = community()
    area_type: Mapped[str | None] = mapped_column(sa.String(4), comment=_label("dibao_membership.area_type"))
    member_count: Mapped[int] = mapped_column(sa.Integer, comment="在保人数")
    monthly_total: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2), comment="在保成员月保障金额合计")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class DibaoMembership(Base):
    """低保成员: a person covered by a 低保 household."""

    __tablename__ = "dibao_membership"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "最低生活保障成员",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "低保资格核对、应退则退"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("dibao_membership.record_id"))
    person_key: Mapped[str] = person_ref(index=True)
    dibao_household_key: Mapped[str] = mapped_column(
        key(16), nullable=False, comment=_label("dibao_membership.household_id") + "（保形加密）"
    )
    relation_to_head: Mapped[str | None] = mapped_column(
        sa.String(8), comment=_label("dibao_membership.relation_to_head")
    )
    area_type: Mapped[str | None] = mapped_column(sa.String(4), comment=_label("dibao_membership.area_type"))
    monthly_amount: Mapped[Decimal | None] = mapped_column(
        sa.Numeric(10, 2), comment=_label("dibao_membership.monthly_amount")
    )
    start_date: Mapped[date | None] = mapped_column(sa.Date, comment=_label("dibao_membership.start_date"))
    status: Mapped[str] = mapped_column(sa.String(4), comment=_label("dibao_membership.status"))
    community_code: Mapped[str] = community(_label("dibao_membership.community_code"))
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("dibao_membership.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class SocialRelief(Base):
    """特困供养、高龄津贴、孤儿: the other 民政 benefits, one row per benefit record (category says which)."""

    __tablename__ = "social_relief"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "特困供养、高龄津贴、孤儿保障对象",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "救助资格核对、避免重复救助"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("social_relief.record_id"))
    person_key: Mapped[str] = person_ref(index=True)
    category: Mapped[str] = mapped_column(sa.String(8), comment=_label("social_relief.category"))
    monthly_amount: Mapped[Decimal | None] = mapped_column(
        sa.Numeric(10, 2), comment=_label("social_relief.monthly_amount")
    )
    start_date: Mapped[date | None] = mapped_column(sa.Date, comment=_label("social_relief.start_date"))
    community_code: Mapped[str] = community(_label("social_relief.community_code"))
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("social_relief.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class EmploymentRegistration(Base):
    """就业失业登记 (人社)."""

    __tablename__ = "employment_registration"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "就业失业登记",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "就业服务、家庭经济状况核对"),
        },
    )
    record_key: Mapped[str] = mapped_column(
        key(64), primary_key=True, comment=_label("employment_registration.record_id")
    )
    person_key: Mapped[str] = person_ref(index=True)
    registration_type: Mapped[str] = mapped_column(
        sa.String(4), comment=_label("employment_registration.registration_type")
    )
    registered_on: Mapped[date | None] = mapped_column(sa.Date, comment=_label("employment_registration.registered_on"))
    community_code: Mapped[str] = community(_label("employment_registration.community_code"))
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("employment_registration.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class InsuranceParticipation(Base):
    """养老、医疗保险参保 (人社); the community is the person's, as the source has none."""

    __tablename__ = "insurance_participation"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "社会保险参保",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "社保服务、家庭经济状况核对"),
        },
    )
    record_key: Mapped[str] = mapped_column(
        key(64), primary_key=True, comment=_label("insurance_participation.record_id")
    )
    person_key: Mapped[str] = person_ref(index=True)
    insurance_type: Mapped[str] = mapped_column(sa.String(16), comment=_label("insurance_participation.insurance_type"))
    status: Mapped[str] = mapped_column(sa.String(8), comment=_label("insurance_participation.status"))
    start_date: Mapped[date | None] = mapped_column(sa.Date, comment=_label("insurance_participation.start_date"))
    monthly_benefit: Mapped[Decimal | None] = mapped_column(
        sa.Numeric(10, 2), comment=_label("insurance_participation.monthly_benefit")
    )
    community_code: Mapped[str] = community("社区代码（取自人员主要社区）")
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("insurance_participation.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class BirthRegistration(Base):
    """出生登记 (计生): the birth, linked to the mother; the family type is in ``sensitive.family_planning``."""

    __tablename__ = "birth_registration"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "出生登记",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "新生儿落户与母婴服务"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("birth_registration.record_id"))
    person_key: Mapped[str] = person_ref("母亲人员键", index=True)
    child_name_masked: Mapped[str | None] = mapped_column(
        sa.String(64), comment=_label("birth_registration.child_name") + "（掩码）"
    )
    child_id_number_masked: Mapped[str | None] = mapped_column(
        sa.String(32), comment=_label("birth_registration.child_id_number") + "（掩码）"
    )
    child_sex: Mapped[str | None] = mapped_column(sa.String(1), comment=_label("birth_registration.child_sex"))
    child_birth_year: Mapped[int | None] = mapped_column(sa.Integer, comment="出生年份")
    birth_order: Mapped[int | None] = mapped_column(sa.Integer, comment=_label("birth_registration.birth_order"))
    community_code: Mapped[str] = community(_label("birth_registration.community_code"))
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


# ------------------------------------------------------------------------------------------- sensitive
class DisabilityCertificate(Base):
    """残疾人证 (残联): sensitive personal information (PIPL Art. 28)."""

    __tablename__ = "disability_certificate"
    __table_args__ = (
        {
            "schema": "sensitive",
            "comment": "残疾人证持证人员（敏感个人信息）",
            "info": _info(
                "sensitive", CONDITIONAL, (BACK_OFFICE, PRIVACY_OFFICER), "残疾人两项补贴与康复服务（限授权用途）"
            ),
        },
    )
    record_key: Mapped[str] = mapped_column(
        key(64), primary_key=True, comment=_label("disability_certificate.record_id") + "（保形加密，当前密钥版本）"
    )
    person_key: Mapped[str] = person_ref(index=True)
    category: Mapped[str] = mapped_column(sa.String(8), comment=_label("disability_certificate.category"))
    level: Mapped[str] = mapped_column(sa.String(1), comment=_label("disability_certificate.level"))
    issued_on: Mapped[date | None] = mapped_column(sa.Date, comment=_label("disability_certificate.issued_on"))
    community_code: Mapped[str] = community(_label("disability_certificate.community_code"))
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class FamilyPlanning(Base):
    """计划生育家庭类别 (特殊家庭): sensitive; one row per birth record."""

    __tablename__ = "family_planning"
    __table_args__ = (
        {
            "schema": "sensitive",
            "comment": "计划生育家庭类别（含特殊家庭，敏感个人信息）",
            "info": _info("sensitive", CONDITIONAL, (BACK_OFFICE, PRIVACY_OFFICER), "计生特殊家庭扶助（限授权用途）"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("birth_registration.record_id"))
    person_key: Mapped[str] = person_ref("母亲人员键", index=True)
    family_type: Mapped[str] = mapped_column(sa.String(16), comment=_label("birth_registration.family_type"))
    community_code: Mapped[str] = community(_label("birth_registration.community_code"))
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class CommunityCorrection(Base):
    """社区矫正 (司法): the strictest class; type and dates are randomised AEAD ciphertexts."""

    __tablename__ = "community_correction"
    __table_args__ = (
        {
            "schema": "sensitive",
            "comment": "社区矫正对象（依法保密，仅司法与授权后台可读）",
            "info": _info("sensitive", NOT_SHARED, (CORRECTIONS_READER,), "社区矫正协同监管（仅司法及经授权后台）"),
        },
    )
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment=_label("community_correction.record_id"))
    person_key: Mapped[str] = person_ref(index=True)
    correction_type_enc: Mapped[str] = mapped_column(
        sa.Text, comment=_label("community_correction.correction_type") + "（随机化认证加密）"
    )
    start_date_enc: Mapped[str] = mapped_column(
        sa.Text, comment=_label("community_correction.start_date") + "（随机化认证加密）"
    )
    end_date_enc: Mapped[str] = mapped_column(
        sa.Text, comment=_label("community_correction.end_date") + "（随机化认证加密）"
    )
    community_code: Mapped[str] = community(_label("community_correction.community_code"))
    source_updated_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime, comment=_label("community_correction.source_updated_at")
    )
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class PersonContact(Base):
    """姓名与联系电话的密文: randomised AEAD, decrypted only by a logged reveal with a reason."""

    __tablename__ = "person_contact"
    __table_args__ = (
        {
            "schema": "sensitive",
            "comment": "姓名与联系电话（随机化认证加密，经授权说明理由后方可查看）",
            "info": _info("sensitive", NOT_SHARED, (BACK_OFFICE, PRIVACY_OFFICER), "后台协同办理时经授权查看"),
        },
    )
    person_key: Mapped[str] = mapped_column(key(32), primary_key=True, comment="人员键")
    name_enc: Mapped[str | None] = mapped_column(sa.Text, comment=_label("person.name") + "（随机化认证加密）")
    phone_enc: Mapped[str | None] = mapped_column(sa.Text, comment=_label("person.phone") + "（随机化认证加密）")
    community_code: Mapped[str] = community("主要社区代码")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


# ------------------------------------------------------------------------------------------- lineage, events, feed
class RecordLineage(Base):
    """来源记录: each published source record and the person it belongs to (from linkage)."""

    __tablename__ = "record_lineage"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "来源记录与人员的对应（数据血缘）",
            "info": _info("core", CONDITIONAL, _CORE_READERS, "追溯每条记录的来源部门与关联方式"),
        },
    )
    dataset: Mapped[str] = mapped_column(key(64), primary_key=True, comment="来源数据集（部门.数据集）")
    record_key: Mapped[str] = mapped_column(key(64), primary_key=True, comment="来源记录编号")
    person_key: Mapped[str] = person_ref(index=True)
    match_kind: Mapped[str] = mapped_column(
        sa.String(16), comment="关联方式（exact 身份证号 / probabilistic 概率匹配 / new 新建）"
    )
    match_probability: Mapped[float | None] = mapped_column(sa.Float, comment="概率匹配的置信度")
    community_code: Mapped[str] = community("记录所属社区代码")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class IdentityEvent(Base):
    """人员键的合并与拆分: consumers follow a key that stopped being used to its survivor."""

    __tablename__ = "identity_event"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "人员键合并与拆分事件",
            "info": _info("core", UNCONDITIONAL, _CORE_READERS, "平台同步人员键变化"),
        },
    )
    event_id: Mapped[int] = mapped_column(
        sa.Integer, primary_key=True, autoincrement=False, comment="事件编号（来自身份关联）"
    )
    kind: Mapped[str] = mapped_column(sa.String(8), comment="类型（merge 合并 / split 拆分）")
    person_key: Mapped[str] = person_ref("合并掉或拆出的人员键")
    survivor_key: Mapped[str] = person_ref("存续人员键")
    occurred_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), comment="发生时间")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class PublishBatch(Base):
    """发布批次: one row per publish, with its counts (no values)."""

    __tablename__ = "publish_batch"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "发布批次",
            "info": _info("core", UNCONDITIONAL, _CORE_READERS, "平台同步与审计"),
        },
    )
    publish_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True, comment="发布批次号")
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), comment="开始时间")
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), comment="完成时间")
    link_run_id: Mapped[int | None] = mapped_column(sa.Integer, comment="所依据的身份关联运行号")
    staged_batches: Mapped[int] = mapped_column(sa.Integer, comment="读取的暂存批次数")
    changes: Mapped[int] = mapped_column(sa.Integer, comment="变更日志行数")
    summary: Mapped[str | None] = mapped_column(sa.Text, comment="各表行数与变更数（JSON，仅计数）")


class ChangeLog(Base):
    """变更日志: what each publish inserted, updated or deleted, read by consumers with ``since``."""

    __tablename__ = "change_log"
    __table_args__ = (
        sa.Index("ix_change_log_publish_id", "publish_id"),
        {
            "schema": "core",
            "comment": "变更日志（平台按序号增量同步）",
            "info": _info("core", UNCONDITIONAL, _CORE_READERS, "平台增量同步"),
        },
    )
    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
        comment="序号（单调递增）",
    )
    publish_id: Mapped[int] = publish_id()
    table_name: Mapped[str] = mapped_column(sa.String(64), comment="表名（模式.表）")
    row_key: Mapped[str] = mapped_column(sa.String(140), comment="行主键（复合键以 | 连接）")
    operation: Mapped[str] = mapped_column(sa.String(8), comment="操作（insert / update / delete）")
    community_code: Mapped[str | None] = mapped_column(sa.String(12), comment="行所属社区代码（行级安全据此过滤）")


class ConsumerScope(Base):
    """数据使用方的社区范围: which communities each database role may read (row-level security)."""

    __tablename__ = "consumer_scope"
    __table_args__ = (
        {
            "schema": "core",
            "comment": "数据使用方可读社区范围（行级安全策略依据）",
            "info": _info("core", NOT_SHARED, (PRIVACY_OFFICER,), "行级安全"),
        },
    )
    role_name: Mapped[str] = mapped_column(sa.String(63), primary_key=True, comment="数据库角色名")
    community_code: Mapped[str] = mapped_column(
        sa.String(12), primary_key=True, comment="社区代码或县级区划代码（* 为全部社区）"
    )


# ------------------------------------------------------------------------------------------- release
def _release_info(purpose: str) -> dict[str, Any]:
    return _info("release", UNCONDITIONAL, (STATISTICS, PRIVACY_OFFICER), purpose)


class _ReleaseColumns:
    """Columns every release table shares: consumer, its own person token, and the generalised QIs."""

    consumer: Mapped[str] = mapped_column(sa.String(63), primary_key=True, comment="数据使用方（每方一个令牌域）")
    person_token: Mapped[str] = mapped_column(
        key(64), primary_key=True, comment="人员令牌（按使用方独立密钥派生，不可跨方关联）"
    )
    age_band: Mapped[str] = mapped_column(sa.String(8), comment="年龄段（5岁一组）")
    sex: Mapped[str] = mapped_column(sa.String(1), comment="性别")
    county_code: Mapped[str] = mapped_column(sa.String(6), comment="县级区划代码")
    row_hash: Mapped[str] = row_hash()
    publish_id: Mapped[int] = publish_id()


class ReleaseResident(_ReleaseColumns, Base):
    """常住人口统计微数据: generalised, k-anonymous."""

    __tablename__ = "resident"
    __table_args__ = (
        {"schema": "release", "comment": "人口统计发布（泛化、k-匿名）", "info": _release_info("人口统计与对外共享")},
    )
    residence_type: Mapped[str] = mapped_column(sa.String(8), comment="居住类型（户籍/流动/其他）")


class ReleaseDisability(_ReleaseColumns, Base):
    """残疾人统计微数据: generalised, k-anonymous and l-diverse on the category."""

    __tablename__ = "disability"
    __table_args__ = (
        {
            "schema": "release",
            "comment": "残疾人统计发布（泛化、k-匿名、l-多样性）",
            "info": _release_info("残疾人事业统计"),
        },
    )
    category: Mapped[str] = mapped_column(sa.String(8), primary_key=True, comment="残疾类别")


class ReleaseAssistance(_ReleaseColumns, Base):
    """社会救助统计微数据: generalised, k-anonymous and l-diverse on the programme."""

    __tablename__ = "social_assistance"
    __table_args__ = (
        {
            "schema": "release",
            "comment": "社会救助统计发布（泛化、k-匿名、l-多样性）",
            "info": _release_info("社会救助统计"),
        },
    )
    programme: Mapped[str] = mapped_column(
        sa.String(8), primary_key=True, comment="救助项目（低保/特困供养/高龄津贴/孤儿）"
    )


#: release tables -> their sensitive columns (distinct l-diversity is checked on these)
RELEASE_SENSITIVE: dict[str, tuple[str, ...]] = {
    "resident": (),
    "disability": ("category",),
    "social_assistance": ("programme",),
}
RELEASE_QUASI_IDENTIFIERS = ("age_band", "sex", "county_code")

metadata = Base.metadata


def published_tables(tier: str | None = None) -> list[sa.Table]:
    """The model's tables (optionally of one tier), in dependency-free definition order."""
    return [t for t in metadata.tables.values() if tier is None or t.schema == tier]


def table(name: str) -> sa.Table:
    """A published table by ``schema.name`` or bare name."""
    for t in metadata.tables.values():
        if name in (t.fullname, t.name):
            return t
    raise KeyError(f"no published table '{name}'; known: {', '.join(sorted(metadata.tables))}")
