"""The staff pages: sign-in, the customer list and a customer's Messages tab.

Pages are rendered on the server; the Messages tab's script only opens rows,
fills the New Message form and talks to the JSON API for changes.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from adapters.http import csrf
from adapters.http.auth import (
    CompanyPrincipal,
    Services,
    ServicesDep,
    current_principal,
)
from adapters.http.reading import (
    MAX_PAGE,
    TimelineQuery,
    company_customers,
    company_templates,
)
from adapters.http.schemas import (
    MessageDetail,
    customer_out,
    message_detail,
    template_out,
)
from adapters.http.sessions import COOKIE_NAME, session_value
from commands.application import Ledger
from commands.directory import get_customer
from commands.history import message_history
from commands.identity import sign_in
from ledger.errors import InvalidCommand, NotFound
from ledger.status import RETRYABLE
from ledger.values import Channel, Direction, Permission, Principal, Status

logger = logging.getLogger(__name__)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)

E = TypeVar("E", bound=StrEnum)

STATUS_LABELS = {status.value: status.value.capitalize() for status in Status}


def safe_next(target: str | None) -> str | None:
    """A same-site path to return to after sign-in, never another host."""
    # "//host" and "/\host" are read by browsers as another host.
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return None


@router.get("/", response_class=RedirectResponse)
def home(principal: Annotated[Principal, Depends(current_principal)]) -> Response:
    """Send a signed-in user to their company's customers."""
    return RedirectResponse(f"/{principal.tenant_id}/customers", status_code=303)


def render(
    request: Request,
    services: Services,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    """A page whose forms carry this browser's CSRF token.

    A browser without a pre-session is given one with the page.
    """
    settings = services.settings
    presession = csrf.presession_of(request, settings)
    fresh = presession is None
    presession = presession or csrf.new_presession()
    context = {**context, "csrf_token": csrf.form_token(settings, presession)}
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    if fresh:
        csrf.keep_presession(response, settings, presession)
    return response


FormChecked = Depends(csrf.check_form_token)


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, services: ServicesDep, next: str | None = None
) -> Response:
    """The sign-in form."""
    return render(
        request,
        services,
        "login.html",
        {"next": safe_next(next) or "", "error": None},
    )


@router.post("/login", response_class=HTMLResponse, dependencies=[FormChecked])
def login(
    request: Request,
    services: ServicesDep,
    login: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check a login and password; on success set the session and go on."""
    user = sign_in(services.ledger, login.strip(), password)
    if user is None:
        logger.info("sign-in refused")
        return render(
            request,
            services,
            "login.html",
            {
                "next": safe_next(next) or "",
                "error": "That login and password do not match; check both.",
                "login": login,
            },
            status_code=401,
        )
    logger.info("user %s signed in", user.login)
    target = safe_next(next) or f"/{user.tenant_id}/customers"
    response = RedirectResponse(target, status_code=303)
    csrf.keep_presession(response, services.settings, csrf.new_presession())
    response.set_cookie(
        COOKIE_NAME,
        session_value(
            services.settings.session_secret, user.id, services.settings.session_hours
        ),
        max_age=services.settings.session_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=services.settings.secure_cookies,
    )
    return response


@router.post("/logout", dependencies=[FormChecked])
def logout() -> Response:
    """End the session by deleting its cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME)
    return response


@router.get("/{company}/customers", response_class=HTMLResponse)
def customers_page(
    request: Request, principal: CompanyPrincipal, services: ServicesDep
) -> Response:
    """The company's customers, each linking to their Messages tab."""
    found = company_customers(services.ledger, principal)
    return render(
        request,
        services,
        "customers.html",
        {"principal": principal, "company": principal.tenant_id, "customers": found},
    )


@router.get(
    "/{company}/customers/{customer_id}/customer-messages",
    response_class=HTMLResponse,
)
def messages_page(
    request: Request,
    customer_id: str,
    principal: CompanyPrincipal,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    channel: str | None = None,
    direction: str | None = None,
    status: str | None = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    message: str | None = None,
) -> Response:
    """A customer's Messages tab, with one message open if asked."""
    ledger = services.ledger
    customer = get_customer(ledger, principal, customer_id)
    query = TimelineQuery(
        search=q or None,
        channel=choice(Channel, channel, "channel"),
        direction=choice(Direction, direction, "direction"),
        status=choice(Status, status, "status"),
        limit=MAX_PAGE,
        cursor=cursor or None,
    )
    page = services.timeline(ledger, principal, customer_id, query)
    filters_active = any([q, channel, direction, status])
    # The tab counts all the customer's messages; the filters' count shows apart.
    everything = TimelineQuery(limit=1)
    total = (
        services.timeline(ledger, principal, customer_id, everything).total
        if filters_active
        else page.total
    )
    can_send = principal.can(Permission.CREATE)

    context: dict[str, Any] = {
        "principal": principal,
        "company": principal.tenant_id,
        "customer": customer_out(customer),
        "page": page,
        "query": query,
        "opened": message and opened_message(ledger, principal, customer_id, message),
        "can_send": can_send,
        "retryable": {s.value for s in RETRYABLE},
        "statuses": list(Status),
        "status_labels": STATUS_LABELS,
        "filters_active": filters_active,
        "total": total,
        "form_config": form_config(services, principal, customer_id)
        if can_send
        else None,
    }
    return render(request, services, "messages.html", context)


def opened_message(
    ledger: Ledger, principal: Principal, customer_id: str, key: str
) -> MessageDetail:
    """The message shown beside the list; it must be this customer's."""
    found, history = message_history(ledger, principal, key)
    if found.customer_id != customer_id:
        raise NotFound("message", key)
    return message_detail(found, history)


def choice(kind: type[E], value: str | None, name: str) -> E | None:
    """A filter value from the query string; blank means no filter."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidCommand(
            name, f"{name} '{value}' is not one of {allowed}; pick one of those."
        ) from None


def form_config(
    services: Services, principal: Principal, customer_id: str
) -> dict[str, Any]:
    """What the New Message form's script needs: API paths, templates, limits."""
    base = f"/api/{principal.tenant_id}"
    return {
        "customerId": customer_id,
        "sendUrl": f"{base}/messages",
        "previewUrl": f"{base}/messages/preview",
        "segmentsUrl": f"{base}/sms/segments",
        "attachmentLimit": services.ledger.policy.attachment_limit_bytes,
        "templates": [
            template_out(t).model_dump(mode="json")
            for t in company_templates(services.ledger, principal)
        ],
    }


def error_page(request: Request, status: int, message: str) -> Response:
    """A failed page request, as a page."""
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message},
        status_code=status,
    )
