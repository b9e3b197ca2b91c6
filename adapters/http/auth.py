"""Who is calling: a Bearer API token, or a staff session cookie.

A token wins when both are present. A session-authenticated change must carry
`X-Requested-With: ledger`, a header a cross-site form cannot send, on top of
the SameSite=Strict cookie. A principal of another company is answered exactly
as if the company did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from adapters.http.errors import CrossSiteRequest, NotSignedIn, UnknownCompany
from adapters.http.metrics import Metrics
from adapters.http.reading import (
    ReportReader,
    StatusReader,
    ThreadReader,
    TimelineReader,
    read_report,
    read_threads,
)
from adapters.http.sending import SendGroup
from adapters.http.sessions import COOKIE_NAME, session_user
from adapters.http.settings import WebSettings
from commands.application import Ledger
from commands.identity import active_user, token_principal, user_principal
from ledger.values import Principal

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_HEADER = "x-requested-with"
SAME_SITE_VALUE = "ledger"

bearer = HTTPBearer(auto_error=False, description="An API token from `ledger tokens`.")
session_cookie = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, description="A staff session from /login."
)


@dataclass(frozen=True)
class Services:
    """What every request handler needs, kept on the application's state."""

    ledger: Ledger
    settings: WebSettings
    metrics: Metrics
    sends: SendGroup
    timeline: TimelineReader
    reports: ReportReader | None = None
    threads: ThreadReader = read_threads
    status: StatusReader = read_report


def services(request: Request) -> Services:
    """The application's Services, for a dependency."""
    found: Services = request.app.state.services
    return found


def current_principal(
    request: Request,
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    cookie: Annotated[str | None, Depends(session_cookie)],
) -> Principal:
    """The caller's principal; raises NotSignedIn when there is none."""
    found = services(request)
    if token is not None:
        principal = token_principal(found.ledger, token.credentials)
        if principal is None:
            raise NotSignedIn()
        return principal
    user_id = cookie and session_user(found.settings.session_secret, cookie)
    if user_id:
        user = active_user(found.ledger, user_id)
        if user is not None:
            same_site = request.headers.get(SAME_SITE_HEADER) == SAME_SITE_VALUE
            if request.method not in SAFE_METHODS and not same_site:
                raise CrossSiteRequest()
            return user_principal(user)
    raise NotSignedIn()


def company_principal(
    company: str, principal: Annotated[Principal, Depends(current_principal)]
) -> Principal:
    """The caller, who must belong to the company named in the path."""
    if principal.tenant_id != company:
        raise UnknownCompany(company)
    return principal


CompanyPrincipal = Annotated[Principal, Depends(company_principal)]
ServicesDep = Annotated[Services, Depends(services)]
