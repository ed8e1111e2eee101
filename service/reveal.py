"""Reveal of one sealed field for a stated reason, under the consumer's role, through ``privacy.reveal``.

The role must be able to read the row (SET ROLE, then the sealed value is selected: the database refuses
otherwise); the service opens the seal (bound to the row's key) to the staged AES-SIV ciphertext, and
``privacy.reveal.reveal`` logs the attempt in the chained audit log before it decrypts. Community-correction
fields (the strictest class) are revealed only after two other operators, each able to read the row, have
approved the request; the value is then shown once, to the operator who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from privacy.operators import CiphertextError, unseal_value
from privacy.policy import Policy

APPROVALS_NEEDED = 2


@dataclass(frozen=True)
class Field:
    """A revealable field: its table, key column, sealed column and the unified field whose policy domain keys it."""

    table: str
    key: str
    column: str
    unified: str

    @property
    def dual(self) -> bool:
        """Whether revealing it needs two approvals (community corrections)."""
        return self.table == "sensitive.community_correction"

    def domain(self, policy: Policy) -> str:
        """The policy's encrypt domain of the field (the seal's and the staged ciphertext's domain)."""
        rule = policy.fields.get(self.unified)
        return rule.treatment.arg if rule is not None and rule.treatment.arg else self.unified.replace(".", "_")


FIELDS: dict[str, Field] = {
    "name": Field("sensitive.person_contact", "person_key", "name_enc", "person.name"),
    "phone": Field("sensitive.person_contact", "person_key", "phone_enc", "person.phone"),
    "correction_type": Field(
        "sensitive.community_correction", "record_key", "correction_type_enc", "community_correction.correction_type"
    ),
    "correction_start": Field(
        "sensitive.community_correction", "record_key", "start_date_enc", "community_correction.start_date"
    ),
    "correction_end": Field(
        "sensitive.community_correction", "record_key", "end_date_enc", "community_correction.end_date"
    ),
}


def sealed_value(conn: sa.Connection, field: Field, key: str) -> str | None:
    """The sealed value as the current role reads it: None when the row is absent, out of scope or empty;
    a permission error (SQLSTATE 42501) when the role may not read the table."""
    row = conn.exec_driver_sql(f"SELECT {field.column} FROM {field.table} WHERE {field.key} = %s", (key,)).first()
    return None if row is None else row[0]


def staged_ciphertext(sealed: str, field: Field, key: str, keyring: Any, policy: Policy) -> str | None:
    """Open the seal to the staged AES-SIV ciphertext (not yet the plaintext); None if it does not open."""
    try:
        return unseal_value(sealed, keyring, field.domain(policy), key)
    except CiphertextError:
        return None


def open_request(conn: sa.Connection, field_name: str, key: str, operator: str, reason: str, case_no: str) -> int:
    """Record a request that needs approvals; returns its id (the service's own role writes it)."""
    field = FIELDS[field_name]
    row = conn.exec_driver_sql(
        "INSERT INTO service.reveal_request (table_name, row_key, field, requested_by, reason, case_no, state) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'pending') RETURNING request_id",
        (field.table, key, field_name, operator, reason, case_no),
    ).first()
    assert row is not None
    return int(row[0])


def request_state(conn: sa.Connection, request_id: int) -> dict[str, Any] | None:
    """A request with its approvers (None when there is no such request)."""
    row = (
        conn.exec_driver_sql(
            "SELECT request_id, table_name, row_key, field, requested_by, case_no, state FROM service.reveal_request "
            "WHERE request_id = %s",
            (request_id,),
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    approvers = [r[0] for r in conn.exec_driver_sql(
        "SELECT approver FROM service.reveal_approval WHERE request_id = %s ORDER BY at", (request_id,)
    ).all()]  # fmt: skip
    return {**dict(row), "approvers": approvers, "approvals_needed": APPROVALS_NEEDED}


def approve(conn: sa.Connection, request_id: int, approver: str, reason: str) -> int:
    """Add an approval; returns the number of approvals. The request turns 'approved' at APPROVALS_NEEDED."""
    conn.exec_driver_sql(
        "INSERT INTO service.reveal_approval (request_id, approver, reason) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (request_id, approver, reason),
    )
    count = conn.exec_driver_sql(
        "SELECT count(*) FROM service.reveal_approval WHERE request_id = %s", (request_id,)
    ).scalar_one()
    if count >= APPROVALS_NEEDED:
        conn.exec_driver_sql(
            "UPDATE service.reveal_request SET state = 'approved' WHERE request_id = %s AND state = 'pending'",
            (request_id,),
        )
    return int(count)


def mark_revealed(conn: sa.Connection, request_id: int) -> bool:
    """Use an approved request up (shown once); False when it was not approved or already used."""
    done = conn.exec_driver_sql(
        "UPDATE service.reveal_request SET state = 'revealed' WHERE request_id = %s AND state = 'approved'",
        (request_id,),
    )
    return done.rowcount == 1
