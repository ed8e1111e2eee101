"""The clerk's pages (Chinese, server-rendered with Jinja2, no JavaScript): the front desk (/desk) looks up a
resident by ID card and sees the one-page record and open cases; the back office (/office) works the cases.

A clerk logs in with the API key `hub consumers add` made for them; the session is a random cookie
(HttpOnly, SameSite=Strict) whose SHA-256 names a server-side session, and every form carries the session's
CSRF token. The ID number travels only in a POST body, and pages go through the same role-scoped, audited
calls as the API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from service.keys import ApiConsumer, KeyCheck
from service.models import LookupRequest
from service.problems import Problem

if TYPE_CHECKING:
    from service.app import Service

COOKIE = "hub_desk"
TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
ROLE_LABELS = {
    "hub_front_desk": "前台受理", "hub_back_office": "后台协同", "hub_privacy_officer": "隐私保护专员",
    "hub_justice": "司法", "hub_platform": "社区平台",
}  # fmt: skip
TABLE_LABELS = {
    "core.hukou_registration": "户籍登记", "core.migrant_registration": "流动人口登记",
    "core.dibao_membership": "低保", "core.social_relief": "特困、高龄、孤儿",
    "core.employment_registration": "就业失业登记",
    "core.insurance_participation": "社会保险", "core.birth_registration": "出生登记（母亲）",
    "sensitive.disability_certificate": "残疾人证", "sensitive.family_planning": "计生家庭",
    "sensitive.community_correction": "社区矫正（内容加密）",
}  # fmt: skip
SECTION_LABELS = {"registrations": "登记信息", "services": "享受服务", "sensitive": "敏感信息（按授权显示）"}
pages = APIRouter(include_in_schema=False)


@dataclass
class DeskSession:
    """A logged-in clerk: the consumer, its key id (re-checked each request: a revoked key ends it), CSRF token."""

    who: ApiConsumer
    key_id: str
    csrf: str
    expires: float
    flash: str | None = None


class DeskSessions:
    """Server-side sessions by the SHA-256 of their cookie (a restart logs everyone out)."""

    def __init__(self, minutes: int) -> None:
        self.seconds = minutes * 60
        self._by_hash: dict[bytes, DeskSession] = {}
        self._lock = threading.Lock()

    def open(self, who: ApiConsumer, key_id: str) -> tuple[str, DeskSession]:
        """A new session and its cookie value."""
        cookie = secrets.token_urlsafe(32)
        session = DeskSession(who, key_id, secrets.token_urlsafe(16), time.monotonic() + self.seconds)
        with self._lock:
            self._by_hash[hashlib.sha256(cookie.encode()).digest()] = session
        return cookie, session

    def get(self, cookie: str | None) -> DeskSession | None:
        """The live session of a cookie."""
        if not cookie:
            return None
        digest = hashlib.sha256(cookie.encode()).digest()
        with self._lock:
            session = self._by_hash.get(digest)
            if session is not None and session.expires < time.monotonic():
                del self._by_hash[digest]
                session = None
        return session

    def close(self, cookie: str | None) -> None:
        """End a session."""
        if cookie:
            with self._lock:
                self._by_hash.pop(hashlib.sha256(cookie.encode()).digest(), None)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _session(request: Request) -> DeskSession | None:
    """The request's live session whose key is still active (a revoked key logs the clerk out)."""
    service = _service(request)
    session = service.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return None
    with service.engine.begin() as conn:
        if service.by_key_id(conn, session.key_id) is None:
            service.sessions.close(request.cookies.get(COOKIE))
            return None
    return session


def _page(request: Request, name: str, session: DeskSession | None, status: int = 200, **context: Any) -> HTMLResponse:
    context |= {"session": session, "role_label": _role_label(session.who.role) if session else None,
                "tables": TABLE_LABELS, "section_labels": SECTION_LABELS}  # fmt: skip
    response = TEMPLATES.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"  # pages may show a resident's record
    return response


def _role_label(role: str) -> str:
    return ROLE_LABELS.get(role) or ("社区平台" if role.startswith("hub_platform_") else role)


def _checked(request: Request, csrf: str) -> DeskSession:
    session = _session(request)
    if session is None or not hmac.compare_digest(session.csrf, csrf):
        raise Problem(403, "session", "会话无效 Session invalid", "log in again at /desk")
    return session


def _to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@pages.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    """The front page is the desk."""
    return _to("/desk")


@pages.get("/desk", response_class=HTMLResponse)
def desk(request: Request) -> Response:
    """The lookup form, or the login form without a session."""
    session = _session(request)
    if session is None:
        return _page(request, "login.html", None)
    flash, session.flash = session.flash, None
    return _page(request, "desk.html", session, message=flash)


@pages.post("/desk/login", response_class=HTMLResponse)
def login(request: Request, api_key: Annotated[str, Form(max_length=200)]) -> Response:
    """Log in with an API key; a wrong or revoked key shows the form again."""
    service = _service(request)
    try:
        with service.engine.begin() as conn:
            who = service.authenticate(conn, api_key.strip())
    except Problem:
        return _page(request, "login.html", None, status=401, message="密钥无效或已吊销")
    key_id = KeyCheck.key_id(api_key.strip())
    assert key_id is not None
    cookie, _ = service.sessions.open(who, key_id)
    response = _to("/office" if who.role in ("hub_back_office", "hub_privacy_officer") else "/desk")
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", max_age=service.sessions.seconds)
    return response


@pages.post("/desk/logout")
def logout(request: Request) -> RedirectResponse:
    """End the session."""
    _service(request).sessions.close(request.cookies.get(COOKIE))
    response = _to("/desk")
    response.delete_cookie(COOKIE)
    return response


@pages.post("/desk/lookup", response_class=HTMLResponse)
def desk_lookup(
    request: Request,
    id_number: Annotated[str, Form(max_length=40)],
    case_no: Annotated[str, Form(max_length=64)],
    csrf: Annotated[str, Form(max_length=64)],
) -> Response:
    """Look a resident up and show the record on this page (the ID number stays out of every URL)."""
    session = _checked(request, csrf)
    service = _service(request)
    try:
        body = LookupRequest(id_number=id_number, case_no=case_no)
    except ValidationError:
        return _page(
            request, "desk.html", session, status=422, message="业务编号格式不正确（不得含身份证号或电话号码）"
        )
    try:
        person = service.lookup(None, body, session=session.who)
        record = service.person(None, person["person_key"], session=session.who)
    except Problem as exc:
        message = {
            404: "未找到该居民（或不在本平台可见范围内）",
            422: "身份证号码无效，请核对",
            429: "查询过于频繁，请稍后再试",
        }
        return _page(request, "desk.html", session, status=exc.status, message=message.get(exc.status, exc.title))
    return _page(request, "person.html", session, record=record, case_no=case_no)


@pages.get("/desk/persons/{person_key}", response_class=HTMLResponse)
def desk_person(request: Request, person_key: str) -> Response:
    """A resident's record by key (links from the worklist and the household)."""
    session = _session(request)
    if session is None:
        return _to("/desk")
    try:
        record = _service(request).person(None, person_key, session=session.who)
    except Problem as exc:
        return _page(request, "desk.html", session, status=exc.status, message="未找到该居民（或不在可见范围内）")
    return _page(request, "person.html", session, record=record, case_no=None)


@pages.get("/office", response_class=HTMLResponse)
def office(request: Request, state: str = "open") -> Response:
    """The back office's worklist (open or claimed cases) with claim and close forms."""
    session = _session(request)
    if session is None:
        return _to("/desk")
    state = state if state in ("open", "claimed", "resolved", "dismissed") else "open"
    try:
        cases = _service(request).cases(session.who, state, None, 200, 0)
    except Exception as exc:  # a role without the worklist's grants gets a plain page, not an error
        if getattr(getattr(exc, "orig", None), "sqlstate", None) != "42501":
            raise
        return _page(request, "office.html", session, status=403, cases=[], state=state, message="本角色无权查看工单")
    flash, session.flash = session.flash, None
    return _page(request, "office.html", session, cases=cases, state=state, message=flash)


@pages.post("/office/cases/{case_id}/{action}")
def office_move(
    request: Request,
    case_id: int,
    action: str,
    csrf: Annotated[str, Form(max_length=64)],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Claim, resolve or dismiss a case from the worklist page; the outcome shows on the next page."""
    session = _checked(request, csrf)
    if action not in ("claim", "resolve", "dismiss"):
        raise Problem(404, "not-found", "未找到 Not found")
    if action != "claim" and len(reason.strip()) < 4:
        session.flash = "结案需填写至少 4 个字的理由"
        return _to("/office?state=claimed")
    try:
        case = _service(request).move_case(session.who, case_id, action, reason.strip() or None)
        session.flash = (
            f"工单 {case_id} 已{ {'claimed': '认领', 'resolved': '办结', 'dismissed': '驳回'}[case['state']] }"
        )
    except Problem as exc:
        session.flash = f"工单 {case_id}：{exc.title}（{exc.detail or ''}）"
    return _to("/office?state=" + ("open" if action == "claim" else "claimed"))
