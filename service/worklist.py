"""The back office's worklist: each cross-department conflict (``core.cross_check``) is a case,
``open → claimed → resolved | dismissed``, worked under the operator's own role.

Cases are made after each publish by ``sync_cases`` (new conflicts become open cases; a conflict that is no
longer in the data gets ``gone_at``, its history kept). A rule whose subject is a benefit (低保, 特困/高龄/孤儿,
养老金 — withdrawing it is 应退则退) is under dual control: the operator who claimed the case may not close
it. The service checks that for a clear answer, and the table's CHECK constraint holds it in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from service.problems import NOT_FOUND, Problem
from service.records import jsonable
from service.tables import case as case_table

#: subjects whose withdrawal is a benefit decision: closing such a case takes a second operator
BENEFIT_TABLES = frozenset({"core.dibao_membership", "core.social_relief", "core.insurance_participation"})
SYNC_ROLE = "hub_back_office"  # the city-wide role whose view of the conflicts the cases are made from
STATES = ("open", "claimed", "resolved", "dismissed")
CLOSED = ("resolved", "dismissed")
_CASE_COLUMNS = (
    "case_id, rule_id, rule_label, person_key, community_code, subject_table, subject_key, evidence_table, "
    "evidence_key, dual_control, state, opened_at, claimed_by, claimed_at, closed_by, closed_at, close_reason, gone_at"
)


def _key(row: Any) -> str:
    return "|".join(
        str(row[c] or "") for c in ("rule_id", "subject_table", "subject_key", "evidence_table", "evidence_key")
    )


def sync_cases(conn: sa.Connection) -> dict[str, int]:
    """Open a case for each new conflict and mark the cases whose conflict is gone; counts only."""
    conn.exec_driver_sql("SELECT set_config('role', %s, true)", (SYNC_ROLE,))
    conflicts = conn.exec_driver_sql("SELECT * FROM core.cross_check").mappings().all()
    conn.exec_driver_sql("SELECT set_config('role', 'none', true)")
    current = {_key(r): r for r in conflicts}
    known: dict[str, bool] = dict(
        conn.exec_driver_sql("SELECT conflict_key, gone_at IS NOT NULL FROM service.case").all()
    )
    now = datetime.now(UTC)
    new = [
        {**{c: r[c] for c in ("rule_id", "rule_label", "person_key", "community_code", "subject_table",
                               "subject_key", "evidence_table", "evidence_key")},
         "conflict_key": k, "dual_control": r["subject_table"] in BENEFIT_TABLES, "state": "open", "opened_at": now}
        for k, r in current.items() if k not in known
    ]  # fmt: skip
    if new:
        conn.execute(sa.insert(case_table), new)
    back = [k for k, gone in known.items() if gone and k in current]
    gone = [k for k, was_gone in known.items() if not was_gone and k not in current]
    if back:
        conn.exec_driver_sql("UPDATE service.case SET gone_at = NULL WHERE conflict_key = ANY(%s)", (back,))
    if gone:
        conn.exec_driver_sql("UPDATE service.case SET gone_at = %s WHERE conflict_key = ANY(%s)", (now, gone))
    return {"conflicts": len(current), "opened": len(new), "gone": len(gone), "back": len(back)}


def _row(mapping: Any) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in dict(mapping).items()}


def list_cases(
    conn: sa.Connection, state: str | None, rule: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Cases the current role sees (its communities), newest first; conflicts gone from the data excluded."""
    where, params = ["gone_at IS NULL"], []
    if state:
        where.append("state = %s")
        params.append(state)
    if rule:
        where.append("rule_id = %s")
        params.append(rule)
    rows = conn.exec_driver_sql(
        f"SELECT {_CASE_COLUMNS} FROM service.case WHERE {' AND '.join(where)} ORDER BY case_id DESC "
        "LIMIT %s OFFSET %s",
        (*params, limit, offset),
    ).mappings()
    return [_row(r) for r in rows]


def get_case(conn: sa.Connection, case_id: int) -> dict[str, Any]:
    """One case with its events, as the current role sees it; 404 when it does not see it."""
    row = (
        conn.exec_driver_sql(f"SELECT {_CASE_COLUMNS} FROM service.case WHERE case_id = %s", (case_id,))
        .mappings()
        .first()
    )
    if row is None:
        raise NOT_FOUND
    events = conn.exec_driver_sql(
        "SELECT at, operator, action, from_state, to_state, reason FROM service.case_event WHERE case_id = %s "
        "ORDER BY event_id",
        (case_id,),
    ).mappings()
    return {**_row(row), "events": [_row(e) for e in events]}


def transition(conn: sa.Connection, case_id: int, operator: str, action: str, reason: str | None) -> dict[str, Any]:
    """Claim, resolve or dismiss a case as ``operator`` under the current role; a Problem says why not."""
    case = get_case(conn, case_id)
    wanted = {"claim": ("open", "claimed"), "resolve": ("claimed", "resolved"), "dismiss": ("claimed", "dismissed")}
    source, target = wanted[action]
    if case["state"] != source:
        raise Problem(
            409,
            "wrong-state",
            "工单状态不允许此操作 Wrong state",
            f"case {case_id} is {case['state']}; {action} needs {source}",
        )
    if target in CLOSED and case["dual_control"] and case["claimed_by"] == operator:
        raise Problem(
            409,
            "dual-control",
            "需另一名工作人员结案 Dual control",
            "this rule withdraws a benefit: the operator who claimed the case may not close it",
        )
    now = datetime.now(UTC)
    values: dict[str, Any] = (
        {"claimed_by": operator, "claimed_at": now}
        if action == "claim"
        else {"closed_by": operator, "closed_at": now, "close_reason": reason}
    )
    sets = ", ".join(f"{k} = %s" for k in values)
    done = conn.exec_driver_sql(
        f"UPDATE service.case SET state = %s, {sets} WHERE case_id = %s AND state = %s",
        (target, *values.values(), case_id, source),
    )
    if done.rowcount != 1:  # another operator moved it first
        raise Problem(409, "wrong-state", "工单状态已变化 Case changed", f"case {case_id} changed meanwhile")
    conn.exec_driver_sql(
        "INSERT INTO service.case_event (case_id, operator, action, from_state, to_state, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (case_id, operator, action, source, target, reason),
    )
    return get_case(conn, case_id)
