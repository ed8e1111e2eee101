"""Cross-department checks (家庭经济状况核对、应退则退) as views, generated from the rules in checks.yaml.

Each rule becomes ``core.conflict_<id>`` and ``core.cross_check`` unions them; every row names the rule
that fired, the person, the subject record and the evidence record behind it. Rules are data: adding a
check is a YAML entry, not code. On PostgreSQL the views are ``security_invoker``, so the reading role's
grants and row-level security apply, and only the back office and the privacy officer may read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from schemas.base import HubError
from schemas.unified import BACK_OFFICE, PRIVACY_OFFICER, table

CHECKS_FILE = Path(__file__).with_name("checks.yaml")
VIEW_PREFIX = "conflict_"
UNION_VIEW = "cross_check"
READERS = (BACK_OFFICE, PRIVACY_OFFICER)
_ID = re.compile(r"^[a-z][a-z0-9_]{2,50}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")
_CURRENT_YEAR = {
    "postgresql": "CAST(EXTRACT(YEAR FROM CURRENT_DATE) AS INTEGER)",
    "sqlite": "CAST(strftime('%Y', 'now') AS INTEGER)",
}


class ChecksError(HubError):
    """The rules file is wrong; the message names the file, the rule and the case."""


@dataclass(frozen=True)
class Join:
    """A table joined into a case under an alias."""

    alias: str
    table: str
    on: str


@dataclass(frozen=True)
class Case:
    """One way a rule fires: subject (alias s), joins, condition, evidence alias, absent tables."""

    subject: str
    joins: tuple[Join, ...]
    where: str | None
    evidence: str | None
    absent: tuple[Join, ...]


@dataclass(frozen=True)
class Rule:
    """A cross-department check."""

    id: str
    label: str
    basis: str
    cases: tuple[Case, ...]

    @property
    def view(self) -> str:
        """The view's name (without schema)."""
        return VIEW_PREFIX + self.id


def _joins(raw: Any, where: str) -> tuple[Join, ...]:
    out = []
    for j in raw or ():
        if not isinstance(j, dict) or not {"alias", "table", "match"} <= set(j):
            raise ChecksError(f"{where}: each join needs alias, table and match")
        if not _ALIAS.match(str(j["alias"])) or j["alias"] == "s":
            raise ChecksError(f"{where}: alias '{j['alias']}' must be lower-case and not 's' (the subject)")
        _table(str(j["table"]), where)
        out.append(Join(str(j["alias"]), str(j["table"]), str(j["match"])))
    return tuple(out)


def _table(name: str, where: str) -> sa.Table:
    try:
        return table(name)
    except KeyError:
        raise ChecksError(f"{where}: no published table '{name}'") from None


def load_rules(path: Path | None = None) -> tuple[dict[str, Any], list[Rule]]:
    """Parse and check the rules file: (params, rules)."""
    path = path or CHECKS_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ChecksError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != 1 or not isinstance(raw.get("rules"), list):
        raise ChecksError(f"{path}: expected 'format: 1' and a 'rules' list")
    params = dict(raw.get("params") or {})
    rules: list[Rule] = []
    for i, entry in enumerate(raw["rules"], start=1):
        rid = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        where = f"{path}: rule {i} ({rid or '?'})"
        if not _ID.match(rid):
            raise ChecksError(f"{where}: id must be lower_snake_case")
        if any(r.id == rid for r in rules):
            raise ChecksError(f"{where}: id appears twice")
        cases = []
        for n, c in enumerate(entry.get("cases") or (), start=1):
            cwhere = f"{where} case {n}"
            subject = str(c.get("subject", ""))
            _table(subject, cwhere)
            joins = _joins(c.get("joins"), cwhere)
            evidence = c.get("evidence")
            if evidence is not None and evidence not in {j.alias for j in joins}:
                raise ChecksError(f"{cwhere}: evidence '{evidence}' is not one of the joins' aliases")
            cases.append(Case(subject, joins, c.get("where"), evidence, _joins(c.get("absent"), cwhere)))
        if not cases:
            raise ChecksError(f"{where}: needs at least one case")
        rules.append(Rule(rid, str(entry.get("label", rid)), str(entry.get("basis", "")), tuple(cases)))
    return params, rules


def _name(conn: sa.Connection, qualified_name: str) -> str:
    schema, name = qualified_name.split(".", 1)
    return name if conn.dialect.name == "sqlite" else f"{schema}.{name}"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def case_sql(conn: sa.Connection, rule: Rule, case: Case, params: dict[str, Any]) -> str:
    """The SELECT of one case (columns: rule, person, community, subject and evidence records)."""
    # the year ages are computed in: the database's current year unless the rules file (or a caller
    # evaluating the rules as of a given date) names one
    values = {"current_year": _CURRENT_YEAR[conn.dialect.name], **{k: str(v) for k, v in params.items()}}

    def fill(text: str) -> str:
        try:
            return text.format(**values)
        except KeyError as exc:
            raise ChecksError(f"rule {rule.id}: unknown placeholder {exc} (params: {', '.join(values)})") from None

    joins = {j.alias: j for j in case.joins}
    evidence = joins.get(case.evidence) if case.evidence else None
    sql = [
        f"SELECT DISTINCT {_text(rule.id)} AS rule_id, {_text(rule.label)} AS rule_label, "
        "s.person_key, s.community_code, "
        f"{_text(case.subject)} AS subject_table, s.record_key AS subject_key, "
        f"{_text(evidence.table) if evidence else 'NULL'} AS evidence_table, "
        f"{evidence.alias + '.record_key' if evidence else 'NULL'} AS evidence_key",
        f"FROM {_name(conn, case.subject)} s",
    ]
    sql += [f"JOIN {_name(conn, j.table)} {j.alias} ON {fill(j.on)}" for j in case.joins]
    conditions = [fill(case.where)] if case.where else []
    conditions += [
        f"NOT EXISTS (SELECT 1 FROM {_name(conn, a.table)} {a.alias} WHERE {fill(a.on)})" for a in case.absent
    ]
    if conditions:
        sql.append("WHERE " + " AND ".join(f"({c})" for c in conditions))
    return "\n".join(sql)


def existing_views(conn: sa.Connection) -> list[str]:
    """The check views the database holds now (names without schema)."""
    inspector = sa.inspect(conn)
    schema = None if conn.dialect.name == "sqlite" else "core"
    return [v for v in inspector.get_view_names(schema=schema) if v.startswith(VIEW_PREFIX) or v == UNION_VIEW]


def refresh_views(conn: sa.Connection, params: dict[str, Any], rules: list[Rule]) -> list[str]:
    """Drop the old check views and create one per rule plus their union; returns the views made."""
    prefix = "" if conn.dialect.name == "sqlite" else "core."
    invoker = " WITH (security_invoker = true)" if conn.dialect.name == "postgresql" else ""
    for view in sorted(existing_views(conn), key=lambda v: v != UNION_VIEW):  # the union reads the others
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {prefix}{view}")
    made = []
    for rule in rules:
        body = "\nUNION\n".join(case_sql(conn, rule, c, params) for c in rule.cases)
        conn.exec_driver_sql(f"CREATE VIEW {prefix}{rule.view}{invoker} AS\n{body}")
        made.append(rule.view)
    union = "\nUNION ALL\n".join(f"SELECT * FROM {prefix}{r.view}" for r in rules)
    conn.exec_driver_sql(f"CREATE VIEW {prefix}{UNION_VIEW}{invoker} AS\n{union}")
    made.append(UNION_VIEW)
    if conn.dialect.name == "postgresql":
        for view in made:
            conn.exec_driver_sql(f"GRANT SELECT ON {prefix}{view} TO {', '.join(READERS)}")
    return made
