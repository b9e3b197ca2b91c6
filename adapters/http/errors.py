"""Every error the HTTP surface answers, as one JSON shape naming the field at fault.

LedgerError subclasses map to statuses in one table; request validation by
FastAPI is reported the same way, with the field named as the client wrote it.
Pages (anything outside /api) answer a missing sign-in by redirecting to the
sign-in form instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ledger.errors import (
    IdempotencyKeyReused,
    InvalidCommand,
    InvalidTransition,
    LedgerError,
    NotFound,
    PermissionDenied,
    RecipientSuppressed,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)

STATUSES: tuple[tuple[type[LedgerError], int, str], ...] = (
    (IdempotencyKeyReused, 409, "idempotency_key_reused"),
    (InvalidCommand, 422, "invalid"),
    (RecipientSuppressed, 409, "recipient_suppressed"),
    (NotFound, 404, "not_found"),
    (PermissionDenied, 403, "forbidden"),
    (InvalidTransition, 409, "conflict"),
    (StoreUnavailable, 503, "store_unavailable"),
)


class ErrorDetail(BaseModel):
    """What went wrong, how to fix it, and which field it concerns."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class UnknownCompany(NotFound):
    """Raised when the path names a company the caller does not belong to."""

    def __init__(self, company: str) -> None:
        LedgerError.__init__(
            self,
            f"No company '{company}' is open to these credentials; check the "
            "company in the path.",
        )
        self.kind = "company"
        self.key = company


class ProjectionsNotServed(StoreUnavailable):
    """Raised when a read needs a projection this server was built without."""

    def __init__(self, projection: str) -> None:
        super().__init__(
            f"This server reads no {projection} projection; run `ledger serve`, "
            "which keeps the projections, to get this report."
        )


class NotSignedIn(Exception):
    """Raised when a request carries no valid token or session."""


class CrossSiteRequest(Exception):
    """Raised when a session-authenticated write lacks the same-site header."""


class FormRefused(Exception):
    """Raised when a page's form is posted without this browser's CSRF token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422, 503)
}


def error_response(
    status: int, code: str, message: str, field: str | None = None
) -> JSONResponse:
    """An ErrorBody response; a 401 also names the Bearer scheme."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def ledger_error(exc: LedgerError) -> JSONResponse:
    """The response for one of the ledger's errors, by the STATUSES table."""
    for kind, status, code in STATUSES:
        if isinstance(exc, kind):
            field = getattr(exc, "field", None)
            if isinstance(exc, RecipientSuppressed):
                field = "to"
            return error_response(status, code, exc.message, field)
    return error_response(400, "rejected", exc.message)


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's first validation problem as an ErrorBody naming the field."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ())]
    if location and location[0] in {"body", "query", "path", "header"}:
        location = location[1:]
    field = ".".join(location) or "body"
    message = first.get("msg", "is not valid")
    if first.get("type") == "missing":
        message = "is required"
    elif first.get("type") == "extra_forbidden":
        message = "is not a field of this request; remove it"
    return error_response(422, "invalid", f"{field}: {message}.", field)


PageRenderer = Callable[[Request, int, str], Response]


def install_error_handlers(app: FastAPI, render_page: PageRenderer) -> None:
    """Answer every expected failure with ErrorBody, or with a page for pages."""

    async def on_ledger_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, LedgerError):
            raise exc
        answer = ledger_error(exc)
        if is_page(request):
            return render_page(request, answer.status_code, exc.message)
        return answer

    async def on_validation(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):
            raise exc
        return validation_error(exc)

    async def on_not_signed_in(request: Request, exc: Exception) -> Response:
        if is_page(request):
            target = quote(request.url.path)
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return error_response(
            401,
            "unauthenticated",
            "Sign in, or send an API token as 'Authorization: Bearer <token>'.",
        )

    async def on_cross_site(request: Request, exc: Exception) -> Response:
        return error_response(
            403,
            "cross_site",
            "A signed-in browser must send the header 'X-Requested-With: ledger' "
            "with every change; reload the page and try again.",
        )

    async def on_form_refused(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, FormRefused):
            raise exc
        if is_page(request):
            return render_page(request, 403, exc.message)
        return error_response(403, "csrf", exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            raise exc
        return error_response(exc.status_code, "http", str(exc.detail))

    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(NotSignedIn, on_not_signed_in)
    app.add_exception_handler(CrossSiteRequest, on_cross_site)
    app.add_exception_handler(FormRefused, on_form_refused)
    app.add_exception_handler(HTTPException, on_http_error)


def is_page(request: Request) -> bool:
    """Whether the request is for a page rather than the JSON API."""
    return not request.url.path.startswith("/api/")
