"""RFC 9457 problem details: every error the service answers is ``application/problem+json``, never a value.

Messages name what was wrong (a field, a state, a rule), never the value that was sent: FastAPI's default
validation error echoes the input, which would put a typed ID number in a response and in clients' logs.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.base import HubError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://community-hub.invalid/problems/"  # names the kinds of problem; not meant to be fetched


class ProblemDetail(BaseModel):
    """An RFC 9457 problem: a kind (type), its title, this occurrence's status and detail."""

    type: str = Field(description="URI naming the kind of problem")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="HTTP status code")
    detail: str | None = Field(default=None, description="what went wrong here (never a personal value)")
    errors: list[dict[str, Any]] | None = Field(default=None, description="invalid fields (names and reasons only)")


class Problem(HubError):
    """An error the service answers with a problem document (status, kind, title, detail, extra headers)."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail, self.headers = status, kind, title, detail, headers or {}


def problem_response(
    status: int, kind: str, title: str, detail: str | None = None, headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:  # fmt: skip
    """The response of one problem."""
    body = ProblemDetail(type=TYPE_BASE + kind, title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=MEDIA_TYPE)


NOT_FOUND = Problem(404, "not-found", "未找到 Not found", "nothing visible to this consumer matches")
FORBIDDEN = Problem(403, "forbidden", "无权访问 Forbidden", "this consumer's role may not read or change this")

#: responses every route may give, for the OpenAPI schema
COMMON: dict[int | str, dict[str, Any]] = {
    400: {"model": ProblemDetail, "description": "the body is not JSON (or not UTF-8)"},
    401: {"model": ProblemDetail, "description": "no or an unknown, revoked or malformed API key"},
    422: {"model": ProblemDetail, "description": "the request does not match the schema"},
}


def install(app: FastAPI) -> None:
    """Answer every error (ours, HTTP, validation, database permission, anything else) as a problem."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.kind, exc.title, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(
            exc.status_code, kind, str(exc.detail) if exc.status_code != 404 else "未找到 Not found"
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "type": str(e.get("type", "")), "msg": _safe_msg(e)}
            for e in exc.errors()
        ]
        return problem_response(422, "invalid-request", "请求不符合要求 Invalid request", None, None, errors)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if getattr(exc.orig, "sqlstate", None) == "42501":  # insufficient_privilege: the role decided
            return problem_response(403, FORBIDDEN.kind, FORBIDDEN.title, FORBIDDEN.detail)
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return problem_response(503, "database-unavailable", "数据库暂不可用 Database unavailable")

    @app.exception_handler(psycopg.Error)
    async def _driver(request: Request, exc: psycopg.Error) -> JSONResponse:
        if exc.sqlstate == "42501":
            return problem_response(403, FORBIDDEN.kind, FORBIDDEN.title, FORBIDDEN.detail)
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(503, "database-unavailable", "数据库暂不可用 Database unavailable")

    @app.exception_handler(Exception)
    async def _anything(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(500, "internal-error", "内部错误 Internal error")


def _safe_msg(error: dict[str, Any]) -> str:
    """Pydantic's message without the input: messages like 'String should match pattern …' name no value."""
    msg = str(error.get("msg", ""))
    return msg if "input" not in error or str(error["input"]) not in msg else "invalid value"
