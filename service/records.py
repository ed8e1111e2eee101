"""The resident's one-page record and the household, read under the consumer's role: what the role's grants
and row-level security let through is what comes back, and nothing else filters.

A section the role may not read (``has_table_privilege`` under SET ROLE) is left out, not an error, so the
front desk's record simply has no sensitive tier. Sealed columns (``*_enc``) are never returned: they are
opened only by an audited reveal.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from schemas.unified import table

PERSON_COLUMNS = (
    "person_key", "name_masked", "id_number_masked", "phone_masked", "sex", "birth_year", "ethnicity",
    "residence_type", "community_code", "county_code",
)  # fmt: skip
#: section -> published tables whose rows about the person it shows
SECTIONS: dict[str, tuple[str, ...]] = {
    "registrations": ("core.hukou_registration", "core.migrant_registration"),
    "services": (
        "core.dibao_membership", "core.social_relief", "core.employment_registration",
        "core.insurance_participation", "core.birth_registration",
    ),
    "sensitive": ("sensitive.disability_certificate", "sensitive.family_planning", "sensitive.community_correction"),
}  # fmt: skip
CASE_TABLE = "service.case"
_HIDDEN = {"row_hash", "publish_id", "person_key"}
# naming a table of a schema the role may not use is itself an error, so the schema is asked first
_MAY_READ = (
    "CASE WHEN has_schema_privilege(split_part({name}, '.', 1), 'USAGE') "
    "THEN has_table_privilege({name}, 'SELECT') ELSE false END"
)


def jsonable(value: Any) -> Any:
    """A database value as JSON: dates ISO, decimals as numbers."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _row(mapping: Any) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in dict(mapping).items()}


def readable(conn: sa.Connection, names: list[str]) -> set[str]:
    """Which of ``names`` (schema.table) the current role may SELECT from."""
    rows = conn.exec_driver_sql(
        f"SELECT t FROM unnest(%s::text[]) AS t WHERE {_MAY_READ.format(name='t')}", (names,)
    ).all()
    return {r[0] for r in rows}


def person_summary(conn: sa.Connection, person_key: str) -> dict[str, Any] | None:
    """The resident's core row as the current role sees it (None: absent or outside its scope)."""
    row = (
        conn.exec_driver_sql(
            f"SELECT {', '.join(PERSON_COLUMNS)} FROM core.person WHERE person_key = %s", (person_key,)
        )
        .mappings()
        .first()
    )
    return _row(row) if row is not None else None


def _columns(name: str) -> list[str]:
    return [c.name for c in table(name).c if c.name not in _HIDDEN and not c.name.endswith("_enc")]


def household_members(conn: sa.Connection, household_key: str) -> list[dict[str, Any]]:
    """The household's members with their masked names, as far as the current role sees them."""
    rows = conn.exec_driver_sql(
        "SELECT m.person_key, p.name_masked, p.sex, p.birth_year, m.relation_to_head, m.status "
        "FROM core.household_member m LEFT JOIN core.person p ON p.person_key = m.person_key "
        "WHERE m.household_key = %s ORDER BY m.relation_to_head = '户主' DESC, p.birth_year, m.person_key",
        (household_key,),
    ).mappings()
    return [_row(r) for r in rows]


def household(conn: sa.Connection, household_key: str) -> dict[str, Any] | None:
    """A household and its members (None: absent or outside the role's scope)."""
    row = (
        conn.exec_driver_sql(
            "SELECT household_key, community_code, member_count, head_person_key FROM core.household "
            "WHERE household_key = %s",
            (household_key,),
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return {**_row(row), "members": household_members(conn, household_key)}


def _flags(sections: dict[str, dict[str, list[dict[str, Any]]]], cases: list[dict[str, Any]] | None) -> list[str]:
    """Short labels a clerk reads first, from what the role could see."""
    got = {name: rows for part in sections.values() for name, rows in part.items()}
    flags = []
    for r in got.get("core.hukou_registration", []):
        if r.get("status") and r["status"] != "正常":
            flags.append(f"户籍状态：{r['status']}")
    if any(r.get("departed_on") is None for r in got.get("core.migrant_registration", [])):
        flags.append("流动人口（在住）")
    if any(r.get("status") == "在保" for r in got.get("core.dibao_membership", [])):
        flags.append("低保在保")
    flags += sorted({str(r["category"]) for r in got.get("core.social_relief", []) if r.get("category")})
    for r in got.get("sensitive.disability_certificate", []):
        flags.append(f"残疾人证：{r.get('category')} {r.get('level')}级")
    if got.get("sensitive.community_correction"):
        flags.append("社区矫正对象")
    open_cases = [c for c in cases or [] if c["state"] in ("open", "claimed")]
    if open_cases:
        flags.append(f"待核对工单 {len(open_cases)} 件")
    return flags


def person_record(conn: sa.Connection, person_key: str) -> dict[str, Any] | None:
    """The one-page record: summary, household and members, registrations, services, the sensitive tier
    where the role reads it, open cases where it reads them, and flags. None when the person is not visible."""
    person = person_summary(conn, person_key)
    if person is None:
        return None
    wanted = [t for names in SECTIONS.values() for t in names] + [CASE_TABLE]
    allowed = readable(conn, wanted)
    sections: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for section, names in SECTIONS.items():
        for name in names:
            if name not in allowed:
                continue
            cols = _columns(name)
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(cols)} FROM {name} WHERE person_key = %s ORDER BY {cols[0]}", (person_key,)
            ).mappings()
            sections.setdefault(section, {})[name] = [_row(r) for r in rows]
    membership = (
        conn.exec_driver_sql(
            "SELECT household_key, relation_to_head, status FROM core.household_member WHERE person_key = %s "
            "ORDER BY status = '正常' DESC, household_key LIMIT 1",
            (person_key,),
        )
        .mappings()
        .first()
    )
    home = None
    if membership is not None:
        home = {**_row(membership), "members": household_members(conn, membership["household_key"])}
    cases = None
    if CASE_TABLE in allowed:
        cases = [
            _row(r)
            for r in conn.exec_driver_sql(
                "SELECT case_id, rule_id, rule_label, state, subject_table, opened_at FROM service.case "
                "WHERE person_key = %s AND gone_at IS NULL ORDER BY case_id",
                (person_key,),
            ).mappings()
        ]
    return {"person": person, "household": home, "sections": sections, "cases": cases, "flags": _flags(sections, cases)}


def changes(conn: sa.Connection, since: int, limit: int) -> list[dict[str, Any]]:
    """Change-log rows after ``since`` that the role may see: row-level security filters the communities, and
    rows of tables the role may not read are left out (their keys would tell what the role may not know)."""
    rows = conn.exec_driver_sql(
        "SELECT seq, publish_id, table_name, row_key, operation, community_code FROM core.change_log "
        f"WHERE seq > %s AND {_MAY_READ.format(name='table_name')} ORDER BY seq LIMIT %s",
        (since, limit),
    ).mappings()
    return [_row(r) for r in rows]
