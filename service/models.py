"""Request and response bodies of the API (they make the OpenAPI schema)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CASE_NO = r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_/\-.]{0,63}$"
_DIGIT_RUN = re.compile(r"[0-9]{11}")
OPERATOR = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
PERSON_KEY = r"^[0-9a-f]{32}$"
REASON = Field(min_length=4, max_length=500, description="why (at least 4 characters; kept in the audit log)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("case_no", check_fields=False)
    @classmethod
    def _names_no_person(cls, value: str) -> str:
        """A case number names the business, never a person: no run of 11+ digits (an ID number, a phone)."""
        if _DIGIT_RUN.search(value):
            raise ValueError("a case number may not hold 11 or more digits in a row (an ID or phone number?)")
        return value


class LookupRequest(_Body):
    """A front-desk lookup: the ID number typed or read from the card, and the business case it serves."""

    id_number: str = Field(min_length=1, max_length=40, description="居民身份证号码（18 位，或旧 15 位）")
    case_no: str = Field(pattern=CASE_NO, description="业务编号 (the case or ticket this lookup serves)")
    operator: str | None = Field(
        default=None, pattern=OPERATOR, description="the platform's clerk (platform consumers); else the consumer"
    )


class PersonSummary(BaseModel):
    """The resident as the consumer's role sees them: masked display fields, never a clear value."""

    person_key: str
    name_masked: str | None = None
    id_number_masked: str | None = None
    phone_masked: str | None = None
    sex: str | None = None
    birth_year: int | None = None
    ethnicity: str | None = None
    residence_type: str | None = None
    community_code: str
    county_code: str | None = None


class Member(BaseModel):
    """A household member (masked)."""

    person_key: str
    name_masked: str | None = None
    sex: str | None = None
    birth_year: int | None = None
    relation_to_head: str | None = None
    status: str | None = None


class HouseholdOfPerson(BaseModel):
    """The person's household: key, their relation and status, and the members."""

    household_key: str
    relation_to_head: str | None = None
    status: str | None = None
    members: list[Member]


class CaseSummary(BaseModel):
    """A case about the person, as the front desk sees it."""

    case_id: int
    rule_id: str
    rule_label: str
    state: str
    subject_table: str
    opened_at: str


class PersonRecord(BaseModel):
    """The one-page record (居民一页通): only what the consumer's role may read is in it."""

    person: PersonSummary
    household: HouseholdOfPerson | None = None
    sections: dict[str, dict[str, list[dict[str, Any]]]] = Field(
        description="section -> table -> rows (registrations, services; sensitive only for roles that read it)"
    )
    cases: list[CaseSummary] | None = Field(default=None, description="open and closed cases (roles that read them)")
    flags: list[str]


class Household(BaseModel):
    """A hukou household and its members."""

    household_key: str
    community_code: str
    member_count: int
    head_person_key: str | None = None
    members: list[Member]


class Change(BaseModel):
    """One change-log row: which published row changed, and how."""

    seq: int
    publish_id: int
    table_name: str
    row_key: str
    operation: str
    community_code: str | None = None


class ChangeFeed(BaseModel):
    """A page of the change feed; ask again with ``since=next_since`` while ``more``."""

    items: list[Change]
    next_since: int
    more: bool


class CaseEvent(BaseModel):
    """A state change of a case."""

    at: str
    operator: str
    action: str
    from_state: str
    to_state: str
    reason: str | None = None


class Case(BaseModel):
    """A cross-department conflict being worked by the back office."""

    case_id: int
    rule_id: str
    rule_label: str
    person_key: str
    community_code: str
    subject_table: str
    subject_key: str
    evidence_table: str | None = None
    evidence_key: str | None = None
    dual_control: bool
    state: Literal["open", "claimed", "resolved", "dismissed"]
    opened_at: str
    claimed_by: str | None = None
    claimed_at: str | None = None
    closed_by: str | None = None
    closed_at: str | None = None
    close_reason: str | None = None
    gone_at: str | None = None
    events: list[CaseEvent] | None = None


class ClaimRequest(_Body):
    """Take a case (the operator is the consumer)."""

    note: str | None = Field(default=None, max_length=500)


class CloseRequest(_Body):
    """Close a claimed case: resolved (the conflict was acted on) or dismissed (no action needed), and why."""

    outcome: Literal["resolved", "dismissed"]
    reason: str = REASON


class RevealRequest(_Body):
    """Reveal one sealed field of one row, for a reason; corrections fields need an approved request_id."""

    field: Literal["name", "phone", "correction_type", "correction_start", "correction_end"]
    key: str = Field(min_length=1, max_length=140, description="person_key (name, phone) or record_key (corrections)")
    reason: str = REASON
    case_no: str = Field(pattern=CASE_NO)
    request_id: int | None = Field(default=None, ge=1, description="an approved request (corrections fields)")


class Revealed(BaseModel):
    """The plaintext of one field (logged before it was shown)."""

    field: str
    key: str
    value: str


class RevealPending(BaseModel):
    """A reveal that waits for approvals."""

    request_id: int
    state: str
    approvers: list[str]
    approvals_needed: int


class ApproveRequest(_Body):
    """Approve another operator's reveal request."""

    reason: str = REASON
