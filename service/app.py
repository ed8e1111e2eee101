"""The front-desk and back-office service (前台一口受理、后台协同办理): the HTTP API and the clerk's pages.

``create_app(config)`` builds the FastAPI application; ``hub serve`` (the composition root) resolves the
config from settings. Each request authenticates its API key, then runs its queries in one transaction
under its consumer's database role (``set_config('role', …, true)``, i.e. SET LOCAL ROLE), so the published
database's grants and row-level security decide what it sees. Only the service's own steps run as the
service's login: checking the key, reading the lookup index, recording reveal requests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError

from privacy.audit_log import AuditLogError
from privacy.keyring import Keyring
from privacy.operators import token_value
from privacy.policy import Policy
from privacy.reveal import AUDIT_DOMAIN, RevealRefused, reveal
from publish.lookup import lookup_token, normalised_id
from service import fastpath, records, worklist
from service import reveal as reveals
from service.audit import AuditUnavailable, AuditWriter
from service.desk import DeskSessions
from service.keys import ApiConsumer, KeyCheck
from service.models import (
    ApproveRequest,
    Case,
    ChangeFeed,
    ClaimRequest,
    CloseRequest,
    Household,
    LookupRequest,
    PersonRecord,
    PersonSummary,
    Revealed,
    RevealPending,
    RevealRequest,
)
from service.problems import COMMON, FORBIDDEN, NOT_FOUND, Problem, ProblemDetail, install
from service.ratelimit import RateLimiter
from service.tables import api_consumer

log = logging.getLogger(__name__)

VERSION = "1.0.0"
PERSON_KEY = r"^[0-9a-f]{32}$"
HOUSEHOLD_KEY = r"^[0-9A-Za-z]{1,16}$"
_bearer = HTTPBearer(auto_error=False, description="API key from `hub consumers add` (hubk_…)")


@dataclass(frozen=True)
class ServiceConfig:
    """What the service runs on: an engine as its own login, the keyring, the policy, the audit log, limits."""

    engine: sa.Engine
    keyring: Keyring
    policy: Policy
    audit_log: Path
    rate_per_minute: float = 120.0
    rate_burst: int = 20
    session_minutes: int = 480
    sync_cases_on_start: bool = True
    pool_size: int = 20  # the lookups' async connections (the other routes use the engine's pool)


class Service:
    """The running service's parts: key checks, rate limits, the audit writer, role-scoped transactions."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.engine = config.engine
        self.keys = KeyCheck()
        self.limiter = RateLimiter(config.rate_per_minute, config.rate_burst)
        self.audit = AuditWriter(config.audit_log, config.engine, config.keyring)
        self.sessions = DeskSessions(config.session_minutes)
        self.pool: fastpath.ConnectionPool | None = None  # opened with the event loop (lifespan)
        self.one_statement = False  # the database has service.lookup (lifespan finds out)

    def close(self) -> None:
        """Flush the audit log and release the database."""
        self.audit.close()
        self.engine.dispose()

    # -- who is asking ------------------------------------------------------------------------------------

    def authenticate(self, conn: sa.Connection, key: str | None) -> ApiConsumer:
        """The consumer whose active key this is; 401 otherwise (the key is never logged)."""
        key_id = KeyCheck.key_id(key or "")
        row = None if key_id is None else conn.exec_driver_sql(_AUTH, (key_id,)).first()
        return self._checked(key, key_id, row)

    def by_key_id(self, conn: sa.Connection, key_id: str) -> ApiConsumer | None:
        """The consumer of an active key id (a desk session, whose key was verified at login)."""
        c = api_consumer.c
        row = conn.execute(sa.select(c.name, c.role).where(c.key_id == key_id, c.revoked_at.is_(None))).first()
        return None if row is None else ApiConsumer(row.name, row.role)

    @contextmanager
    def transaction(self, key: str | None) -> Iterator[tuple[sa.Connection, ApiConsumer]]:
        """One transaction: authenticate as the service, then the caller acts as the consumer (``act_as``)."""
        with self.engine.begin() as conn:
            yield conn, self.authenticate(conn, key)

    @staticmethod
    def act_as(conn: sa.Connection, who: ApiConsumer) -> None:
        """SET LOCAL ROLE to the consumer's role for the rest of the transaction."""
        conn.exec_driver_sql("SELECT set_config('role', %s, true)", (who.role,))

    @staticmethod
    def as_service(conn: sa.Connection) -> None:
        """Back to the service's own login for the rest of the transaction."""
        conn.exec_driver_sql("SELECT set_config('role', 'none', true)")

    def limit(self, who: ApiConsumer, action: str, **event: Any) -> None:
        """Spend a rate-limit token; a refusal is audited and answered 429 with Retry-After."""
        wait = self.limiter.take(who.name)
        if wait is not None:
            self.record(who, action, "rate_limited", **event)
            raise Problem(
                429,
                "rate-limited",
                "请求过于频繁 Too many requests",
                f"retry after {wait} s",
                {"Retry-After": str(wait)},
            )

    def record(self, who: ApiConsumer, action: str, outcome: str, **fields: Any) -> None:
        """Audit one request (durable before the answer); 503 when the log cannot take it."""
        try:
            self.audit.record({"action": action, "consumer": who.name, "role": who.role, "outcome": outcome, **fields})
        except AuditUnavailable as exc:
            log.error("%s", exc)
            raise Problem(503, "audit-unavailable", "审计日志不可用 Audit log unavailable",
                          "the request was not served because it could not be logged") from None  # fmt: skip

    # -- what the API does (the desk pages call the same) ----------------------------------------------------

    def _lookup_read(self, key: str | None, body: LookupRequest, session: ApiConsumer | None) -> _Lookup:
        """The database part of a lookup: authenticate and read the index in one statement (as the service),
        then the person under the consumer's role; nothing is answered or logged here."""
        number = normalised_id(body.id_number)
        keyring = self.config.keyring
        token = None if number is None else lookup_token(number, keyring)
        with self.engine.begin() as conn:
            if session is None:
                key_id = KeyCheck.key_id(key or "")
                row = None if key_id is None else conn.exec_driver_sql(fastpath.AUTH_AND_INDEX, (token, key_id)).first()
                who = self._checked(key, key_id, row)
                found = row[4] if row is not None else None
            else:
                who = session
                found = conn.exec_driver_sql(_INDEX, (token,)).scalar() if token else None
            event, refused = self._admit(who, body, number)
            if refused is not None:
                return refused
            self.act_as(conn, who)  # the same statements whether or not the index knows the ID
            person = records.person_summary(conn, found or "")
        event["person_key"] = person["person_key"] if person else None
        return _Lookup(who, event, "found" if person else "not_found", person, None)

    def _admit(
        self, who: ApiConsumer, body: LookupRequest, number: str | None
    ) -> tuple[dict[str, Any], _Lookup | None]:
        """The lookup's audit fields, and its refusal when the consumer is over its rate or the ID is invalid."""
        event: dict[str, Any] = {"operator": body.operator or who.name, "case_no": body.case_no}
        if number is not None:
            event["value_token"] = token_value(number, self.config.keyring, AUDIT_DOMAIN)
        wait = self.limiter.take(who.name)
        if wait is not None:
            return event, _Lookup(who, event, "rate_limited", None, wait)
        if number is None:
            return event, _Lookup(who, event, "invalid_id", None, None)
        return event, None

    async def _checked_async(self, key: str | None, key_id: str | None, row: Any) -> ApiConsumer:
        """``_checked`` on the event loop: a key seen before is compared at once, a new one (Argon2) in a thread."""
        if row is not None and not self.keys.known(key or "", key_id or ""):
            checked: ApiConsumer = await anyio.to_thread.run_sync(self._checked, key, key_id, row)
            return checked
        return self._checked(key, key_id, row)

    def _checked(self, key: str | None, key_id: str | None, row: Any) -> ApiConsumer:
        """The consumer of a row read by key id, when the key is active and verifies; 401 otherwise."""
        if key_id is None:
            raise _unauthorised("an API key is required: Authorization: Bearer hubk_…")
        if row is None or row[3] is not None or not self.keys.verify(key or "", key_id, row[2]):
            log.warning("refused API key %s (%s)", key_id, "revoked" if row is not None and row[3] else "unknown")
            raise _unauthorised("the API key is unknown or revoked")
        return ApiConsumer(row[0], row[1])

    def lookup(self, key: str | None, body: LookupRequest, session: ApiConsumer | None = None) -> dict[str, Any]:
        """Find the resident with this ID number among those the consumer may see; 404 otherwise (logged)."""
        found = self._lookup_read(key, body, session)
        self.record(found.who, "lookup", found.outcome, **found.event)
        return found.answer()

    async def lookup_async(self, key: str | None, body: LookupRequest) -> dict[str, Any]:
        """``lookup`` on the event loop (``service.fastpath``): the same statements and answers, no threads."""
        if self.pool is None:
            found = await anyio.to_thread.run_sync(self._lookup_read, key, body, None)
        else:
            found = await self._lookup_fast(key, body, self.pool)
        event = {"action": "lookup", "consumer": found.who.name, "role": found.who.role, "outcome": found.outcome}
        try:
            await asyncio.wrap_future(self.audit.submit(event | found.event))
        except AuditLogError as exc:
            raise _audit_unavailable(exc) from None
        return found.answer()

    async def _lookup_fast(self, key: str | None, body: LookupRequest, pool: fastpath.ConnectionPool) -> _Lookup:
        number = normalised_id(body.id_number)
        keyring = self.config.keyring
        token = None if number is None else lookup_token(number, keyring)
        key_id = KeyCheck.key_id(key or "")
        if key_id is None:
            self._checked(key, None, None)
        values: tuple[Any, ...] | None
        if self.one_statement:
            async with pool.connection() as conn:
                row = await (await conn.execute(fastpath.LOOKUP, (token or "", key_id))).fetchone()
            values = None if row is None else (row["name"], row["role"], row["key_hash"], row["revoked_at"])
            who = await self._checked_async(key, key_id, values)
            event, refused = self._admit(who, body, number)
            if refused is not None:
                return refused
            person = row["person"] if row is not None else None
        else:
            async with pool.transaction() as conn:
                row = await (await conn.execute(fastpath.AUTH_AND_INDEX, (token, key_id))).fetchone()
                values = None if row is None else tuple(row.values())
                who = await self._checked_async(key, key_id, values)
                event, refused = self._admit(who, body, number)
                if refused is not None:
                    return refused
                # the same statements whether or not the index knows the ID: no timing tells absent from out of scope
                await conn.execute(fastpath.ACT_AS, (who.role,))
                found = await (await conn.execute(fastpath.PERSON, ((values[4] if values else None) or "",))).fetchone()
                person = None if found is None else {k: records.jsonable(v) for k, v in found.items()}
        event["person_key"] = person["person_key"] if person else None
        return _Lookup(who, event, "found" if person else "not_found", person, None)

    def person(self, key: str | None, person_key: str, session: ApiConsumer | None = None) -> dict[str, Any]:
        """The one-page record under the consumer's role (audited)."""
        with self._session_or_key(key, session) as (conn, who):
            self.act_as(conn, who)
            record = records.person_record(conn, person_key)
        return self.shown(who, "view_person", record, person_key=person_key)

    def shown(self, who: ApiConsumer, action: str, found: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
        """Audit a read (shown or not found), then answer it: the row, or 404."""
        self.record(who, action, "shown" if found else "not_found", **fields)
        if found is None:
            raise NOT_FOUND
        return found

    @contextmanager
    def _session_or_key(
        self, key: str | None, session: ApiConsumer | None
    ) -> Iterator[tuple[sa.Connection, ApiConsumer]]:
        if session is not None:
            with self.engine.begin() as conn:
                yield conn, session
        else:
            with self.transaction(key) as pair:
                yield pair

    def cases(self, who: ApiConsumer, state: str | None, rule: str | None, limit: int, offset: int) -> list[dict]:
        """The worklist as the consumer's role sees it (audited)."""
        with self.engine.begin() as conn:
            self.act_as(conn, who)
            found = worklist.list_cases(conn, state, rule, limit, offset)
        self.record(who, "list_cases", "shown", rows=len(found))
        return found

    def move_case(self, who: ApiConsumer, case_id: int, action: str, reason: str | None) -> dict[str, Any]:
        """Claim / resolve / dismiss under the consumer's role; every attempt is audited."""
        try:
            with self.engine.begin() as conn:
                self.act_as(conn, who)
                case = worklist.transition(conn, case_id, who.name, action, reason)
        except Problem as exc:
            self.record(who, f"case_{action}", f"refused: {exc.kind}", case_id=case_id, reason=reason)
            raise
        except DBAPIError as exc:
            self.record(who, f"case_{action}", "refused: role", case_id=case_id, reason=reason)
            raise _forbidden_or(exc) from None
        self.record(who, f"case_{action}", case["state"], case_id=case_id, reason=reason)
        return case


_AUTH = "SELECT name, role, key_hash, revoked_at FROM service.api_consumer WHERE key_id = %s"
_INDEX = "SELECT person_key FROM service.lookup_index WHERE lookup_token = %s LIMIT 1"


@dataclass(frozen=True)
class _Lookup:
    """What a lookup found, before it is logged and answered."""

    who: ApiConsumer
    event: dict[str, Any]
    outcome: str
    person: dict[str, Any] | None
    wait: int | None

    def answer(self) -> dict[str, Any]:
        """The person, or the Problem of the outcome."""
        if self.wait is not None:
            raise Problem(429, "rate-limited", "请求过于频繁 Too many requests", f"retry after {self.wait} s",
                          {"Retry-After": str(self.wait)})  # fmt: skip
        if self.outcome == "invalid_id":
            raise Problem(422, "invalid-id-number", "身份证号码无效 Invalid ID number",
                          "not an 18-digit (or legacy 15-digit) ID number with a valid check character")  # fmt: skip
        if self.person is None:
            raise NOT_FOUND
        return self.person


def _audit_unavailable(exc: Exception) -> Problem:
    log.error("audit log unavailable: %s", type(exc).__name__)
    return Problem(503, "audit-unavailable", "审计日志不可用 Audit log unavailable",
                   "the request was not served because it could not be logged")  # fmt: skip


def _unauthorised(detail: str) -> Problem:
    return Problem(401, "unauthorised", "未认证 Unauthorised", detail, {"WWW-Authenticate": "Bearer"})


def _forbidden_or(exc: DBAPIError) -> Exception:
    return FORBIDDEN if getattr(exc.orig, "sqlstate", None) == "42501" else exc


def _key(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _who(request: Request, credentials: Credentials) -> ApiConsumer:
    """The authenticated consumer (its own short transaction)."""
    service = _service(request)
    with service.engine.begin() as conn:
        return service.authenticate(conn, _key(credentials))


Who = Annotated[ApiConsumer, Depends(_who)]
NOT_FOUND_DOC: dict[int | str, dict[str, Any]] = {404: {"model": ProblemDetail, "description": "not visible"}}
LIMIT_DOC: dict[int | str, dict[str, Any]] = {429: {"model": ProblemDetail, "description": "rate limit"}}
DENY_DOC: dict[int | str, dict[str, Any]] = {403: {"model": ProblemDetail, "description": "role may not"}}
STATE_DOC: dict[int | str, dict[str, Any]] = {409: {"model": ProblemDetail, "description": "state or dual control"}}


_QUERY_NAMES: dict[int, set[str]] = {}  # route -> the query parameters it declares (routes live as long as the app)


async def _strict_query(request: Request) -> None:
    """Refuse query parameters the operation does not declare (hostile or mistyped input is not ignored)."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    allowed = _QUERY_NAMES.get(id(route))
    if allowed is None:
        dependant = getattr(route, "dependant", None)
        allowed = {p.alias for p in get_flat_dependant(dependant).query_params} if dependant is not None else set()
        _QUERY_NAMES[id(route)] = allowed
    unknown = set(request.query_params) - allowed
    if unknown:
        raise Problem(
            422, "invalid-request", "请求不符合要求 Invalid request", f"{len(unknown)} unknown query parameter(s)"
        )


api = APIRouter(prefix="/v1", responses=COMMON, dependencies=[Depends(_strict_query)])


@api.post("/lookup", response_model=PersonSummary, responses={**NOT_FOUND_DOC, **LIMIT_DOC}, tags=["front desk"])
async def lookup_route(body: LookupRequest, request: Request, credentials: Credentials) -> Response:
    """Find a resident by ID number (in the body, never the URL), among those the consumer's role may see.

    Not found and out of scope are the same answer. Rate-limited per consumer; every lookup is audited
    with consumer, operator, case number, outcome and a keyed token of the ID (never the ID).
    """
    person = await _service(request).lookup_async(_key(credentials), body)
    return JSONResponse(person)  # already JSON-shaped: the hot path skips FastAPI's re-validation of the answer


@api.get("/persons/{person_key}", response_model=PersonRecord, responses=NOT_FOUND_DOC, tags=["front desk"])
def person_route(
    request: Request, credentials: Credentials, person_key: Annotated[str, PathParam(pattern=PERSON_KEY)]
) -> dict[str, Any]:
    """The resident's one-page record as the consumer's role sees it (masked; sensitive only where granted)."""
    return _service(request).person(_key(credentials), person_key)


@api.get("/households/{household_key}", response_model=Household, responses=NOT_FOUND_DOC, tags=["front desk"])
def household_route(
    request: Request, who: Who, household_key: Annotated[str, PathParam(pattern=HOUSEHOLD_KEY)]
) -> dict[str, Any]:
    """A hukou household (its key is the published, format-preserving encrypted 户号) and its members."""
    service = _service(request)
    with service.engine.begin() as conn:
        service.act_as(conn, who)
        found = records.household(conn, household_key)
    return service.shown(who, "view_household", found, household_key=household_key)


@api.get("/changes", response_model=ChangeFeed, tags=["platforms"])
def changes_route(
    request: Request,
    who: Who,
    since: Annotated[int, Query(ge=0, le=2**62, description="last seq already read (0: from the start)")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """The publish change log after ``since``, filtered by the consumer's rights (communities and tables)."""
    service = _service(request)
    with service.engine.begin() as conn:
        service.act_as(conn, who)
        items = records.changes(conn, since, limit + 1)
    more = len(items) > limit
    items = items[:limit]
    service.record(who, "changes", "shown", since=since, rows=len(items))
    return {"items": items, "next_since": items[-1]["seq"] if items else since, "more": more}


@api.get("/cases", response_model=list[Case], responses=DENY_DOC, tags=["back office"])
def cases_route(
    request: Request,
    who: Who,
    state: Annotated[str | None, Query(pattern="^(open|claimed|resolved|dismissed)$")] = None,
    rule: Annotated[str | None, Query(pattern="^[a-z][a-z0-9_]{2,50}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    """The worklist: cross-department conflicts of the consumer's communities, newest first."""
    try:
        return _service(request).cases(who, state, rule, limit, offset)
    except DBAPIError as exc:
        raise _forbidden_or(exc) from None


CaseId = Annotated[int, PathParam(ge=1, le=2**62)]


@api.get("/cases/{case_id}", response_model=Case, responses={**NOT_FOUND_DOC, **DENY_DOC}, tags=["back office"])
def case_route(request: Request, who: Who, case_id: CaseId) -> dict[str, Any]:
    """One case with its history."""
    service = _service(request)
    try:
        with service.engine.begin() as conn:
            service.act_as(conn, who)
            case = worklist.get_case(conn, case_id)
    except DBAPIError as exc:
        raise _forbidden_or(exc) from None
    service.record(who, "view_case", "shown", case_id=case_id)
    return case


CASE_DOCS = {**NOT_FOUND_DOC, **DENY_DOC, **STATE_DOC}


@api.post("/cases/{case_id}/claim", response_model=Case, responses=CASE_DOCS, tags=["back office"])
def claim_route(request: Request, who: Who, case_id: CaseId, body: ClaimRequest | None = None) -> dict[str, Any]:
    """Take an open case (open → claimed); the consumer is the operator."""
    return _service(request).move_case(who, case_id, "claim", body.note if body else None)


@api.post("/cases/{case_id}/close", response_model=Case, responses=CASE_DOCS, tags=["back office"])
def close_route(request: Request, who: Who, case_id: CaseId, body: CloseRequest) -> dict[str, Any]:
    """Close a claimed case as resolved or dismissed, with a reason; benefit rules need a second operator."""
    action = "resolve" if body.outcome == "resolved" else "dismiss"
    return _service(request).move_case(who, case_id, action, body.reason)


@api.post(
    "/reveal",
    response_model=Revealed,
    responses={
        **NOT_FOUND_DOC,
        **DENY_DOC,
        **LIMIT_DOC,
        202: {"model": RevealPending, "description": "needs approvals"},
    },
    tags=["back office"],
)
def reveal_route(request: Request, who: Who, body: RevealRequest) -> Any:
    """Reveal one sealed field for a reason (logged first). Corrections fields: the first call opens a
    request (202); after two other operators approved it, calling again with its request_id shows the value."""
    service = _service(request)
    field = reveals.FIELDS[body.field]
    event = {"field": body.field, "table": field.table, "row_key": body.key, "case_no": body.case_no,
             "reason": body.reason}  # fmt: skip
    service.limit(who, "reveal_request", **event)
    try:
        with service.engine.begin() as conn:
            service.act_as(conn, who)
            sealed = reveals.sealed_value(conn, field, body.key)
    except DBAPIError as exc:
        service.record(who, "reveal_request", "refused: role", **event)
        raise _forbidden_or(exc) from None
    if sealed is None:
        service.record(who, "reveal_request", "not_found", **event)
        raise NOT_FOUND
    if field.dual:
        with service.engine.begin() as conn:
            if body.request_id is None:
                request_id = reveals.open_request(conn, body.field, body.key, who.name, body.reason, body.case_no)
                state = reveals.request_state(conn, request_id)
                service.record(who, "reveal_request", "pending", request_id=request_id, **event)
                return JSONResponse(RevealPending.model_validate(state).model_dump(), status_code=202)
            state = reveals.request_state(conn, body.request_id)
            fits = state is not None and state["requested_by"] == who.name and state["field"] == body.field
            if (
                not fits
                or state is None
                or state["row_key"] != body.key
                or not reveals.mark_revealed(conn, body.request_id)
            ):
                service.record(who, "reveal_request", "refused: not approved", request_id=body.request_id, **event)
                raise Problem(
                    409,
                    "not-approved",
                    "尚未获得两名工作人员批准 Not approved",
                    "corrections fields need a request of yours that two other operators approved",
                )
    ciphertext = reveals.staged_ciphertext(sealed, field, body.key, service.config.keyring, service.config.policy)
    if ciphertext is None:
        service.record(who, "reveal_request", "failed: seal", **event)
        raise Problem(409, "cannot-open", "无法解密 Cannot open", "the sealed value does not open for this row")
    try:
        value = reveal(
            ciphertext,
            field.domain(service.config.policy),
            f"{body.reason} [{body.case_no}]",
            who.name,
            service.config.keyring,
            service.config.policy,
            service.config.audit_log,
            service.engine,
        )
    except RevealRefused as exc:
        raise Problem(403, "reveal-refused", "拒绝查看 Reveal refused", str(exc)) from None
    response = JSONResponse({"field": body.field, "key": body.key, "value": value})
    response.headers["Cache-Control"] = "no-store"
    return response


@api.post(
    "/reveal/{request_id}/approve",
    response_model=RevealPending,
    responses={**NOT_FOUND_DOC, **DENY_DOC, **STATE_DOC},
    tags=["back office"],
)
def approve_route(
    request: Request, who: Who, request_id: Annotated[int, PathParam(ge=1, le=2**62)], body: ApproveRequest
) -> dict[str, Any]:
    """Approve another operator's request to reveal a corrections field (your role must read the row)."""
    service = _service(request)
    with service.engine.begin() as conn:
        state = reveals.request_state(conn, request_id)
        if state is None:
            service.record(who, "reveal_approve", "not_found", request_id=request_id)
            raise NOT_FOUND
    field = reveals.FIELDS[state["field"]]
    try:
        with service.engine.begin() as conn:
            service.act_as(conn, who)
            readable = reveals.sealed_value(conn, field, state["row_key"]) is not None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":
            raise
        readable = False
    if not readable:
        service.record(who, "reveal_approve", "refused: role", request_id=request_id)
        raise FORBIDDEN
    if state["requested_by"] == who.name or state["state"] != "pending":
        service.record(who, "reveal_approve", "refused: own or not pending", request_id=request_id)
        raise Problem(
            409,
            "cannot-approve",
            "不能批准 Cannot approve",
            "a request is approved by two operators other than the one who asked, while pending",
        )
    with service.engine.begin() as conn:
        reveals.approve(conn, request_id, who.name, body.reason)
        state = reveals.request_state(conn, request_id)
    service.record(who, "reveal_approve", "approved", request_id=request_id, reason=body.reason)
    assert state is not None
    return state


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    anyio.to_thread.current_default_thread_limiter().total_tokens = 100  # 50+ concurrent clients, sync routes
    # the audit writer thread releases the GIL at each write, fsync and query; with the default 5 ms switch
    # interval it then waits behind the busy event loop each time, and every request waits for the writer
    sys.setswitchinterval(0.0005)
    url = service.engine.url.set(drivername="postgresql")
    service.pool = fastpath.ConnectionPool(url.render_as_string(hide_password=False), service.config.pool_size)
    service.one_statement = await service.pool.has_lookup()
    gc.freeze()  # what startup made lives as long as the app: the collector need not walk it on every pass
    if service.config.sync_cases_on_start:
        with service.engine.begin() as conn:
            counts = worklist.sync_cases(conn)
        log.info("worklist: %(conflicts)d conflicts, %(opened)d cases opened, %(gone)d gone", counts)
    try:
        yield
    finally:
        await service.pool.close()
        await anyio.to_thread.run_sync(service.close)


def _problem_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with every error answer documented as it is sent: ``application/problem+json``."""
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}}
        for path in document["paths"].values():
            for operation in path.values():
                for status, answer in operation.get("responses", {}).items():
                    if status[0] in "45":
                        answer["content"] = problem
        for unused in ("HTTPValidationError", "ValidationError"):
            document["components"]["schemas"].pop(unused, None)
        app.openapi_schema = document
    return app.openapi_schema


def build_app(service: Service | None) -> FastAPI:
    """The application with every route (``service`` None: only for writing the OpenAPI schema)."""
    from service import desk

    app = FastAPI(
        title="社区数据共享服务 Community data-sharing hub service",
        version=VERSION,
        description="前台一口受理、后台协同办理: lookups by ID card, the resident's one-page record, the joint-"
        "handling worklist, audited reveal and the change feed. Every request runs under its consumer's "
        "database role; errors are RFC 9457 problem details.",
        lifespan=_lifespan if service is not None else None,
    )
    app.state.service = service
    app.openapi = lambda: _problem_openapi(app)  # type: ignore[method-assign]
    install(app)
    app.include_router(api)
    app.include_router(desk.pages)
    return app


def create_app(config: ServiceConfig) -> FastAPI:
    """The service on ``config``'s database (its audit writer starts now; it stops with the app)."""
    return build_app(Service(config))
