"""One-click unsubscribe (RFC 8058): the link marketing email carries.

The dispatcher writes `List-Unsubscribe: <{LEDGER_UNSUBSCRIBE_URL}/{token}>`
and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (commands/dispatch.py),
where the token is the message id and its MAC under LEDGER_REPLY_SECRET, the
same token as the message's signed reply address. The routes live at the path
of LEDGER_UNSUBSCRIBE_URL (`/unsubscribe` when it is unset).

- POST with the body `List-Unsubscribe=One-Click` stops marketing email to the
  message's recipients (commands.suppressions.unsubscribe_by_link); receipts,
  confirmations and other transactional email still reach them. Mail clients post it
  without cookies or any other credential: the signature is the credential.
  Repeats record nothing more.
- GET shows a page asking to confirm, whose button posts the same body. A GET
  changes nothing, since link scanners and previews fetch links nobody clicked.
- A token that is damaged, forged, or of a message that is not marketing email
  answers 404 with a page saying so, and records nothing.

These forms carry no CSRF token: the link is its own secret, and a site that
knew it could do no more than the recipient's own mail client does with it.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from adapters.http.pages import templates
from commands.application import Ledger
from commands.suppressions import check_not_suppressed, unsubscribe_by_link
from ledger.directory import Company
from ledger.errors import LedgerError, NotFound, RecipientSuppressed
from ledger.mail_identity import MAC_LENGTH, REPLY_PREFIX, parse_reply_address
from ledger.message import Message
from ledger.suppression import MARKETING
from ledger.values import Channel

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/unsubscribe"
ONE_CLICK = "One-Click"
TOKEN_SHAPE = re.compile(rf"[0-9a-fA-F]{{32}}\.[0-9a-fA-F]{{{MAC_LENGTH}}}")
# The token is the local part of a signed reply address; any domain will do
# to check it, since the MAC covers the message id alone.
CHECK_DOMAIN = "unsubscribe.invalid"
HTML_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"content": {"text/html": {}}, "description": description}
    for status, description in (
        (400, "The POST body is not List-Unsubscribe=One-Click"),
        (404, "The link is damaged, forged or not an unsubscribe link"),
        (503, "The event store failed; nothing was recorded"),
    )
}

OneClickField = Annotated[
    str | None,
    Form(
        alias="List-Unsubscribe",
        description="Must be `One-Click`, as RFC 8058 has mail clients send it.",
    ),
]


def link_path(unsubscribe_url: str | None) -> str:
    """The path the links are answered at: that of LEDGER_UNSUBSCRIBE_URL."""
    if not unsubscribe_url:
        return DEFAULT_PATH
    path = urlsplit(unsubscribe_url).path.rstrip("/")
    if not path.startswith("/"):
        raise LedgerError(
            f"LEDGER_UNSUBSCRIBE_URL '{unsubscribe_url}' has no path; the links "
            "are answered under it, so give one, e.g. "
            "https://brightside.example/unsubscribe."
        )
    return path


def linked_message_id(token: str, secret: bytes | None) -> uuid.UUID | None:
    """The message a link's token names, or None if the signature does not hold."""
    if secret is None:
        logger.warning(
            "an unsubscribe link was followed, but LEDGER_REPLY_SECRET is unset "
            "so no link can be checked"
        )
        return None
    if not TOKEN_SHAPE.fullmatch(token):
        return None
    return parse_reply_address(f"{REPLY_PREFIX}{token}@{CHECK_DOMAIN}", secret)


def marketing_message(ledger: Ledger, message_id: uuid.UUID | None) -> Message | None:
    """The marketing message a link names; None for any other."""
    if message_id is None:
        return None
    message = ledger.load(Message, message_id)
    if message is None or message.category != "marketing":
        return None
    return message


def page(
    request: Request, state: str, status_code: int = 200, **context: Any
) -> Response:
    """The unsubscribe page in one of its states."""
    return templates.TemplateResponse(
        request,
        "unsubscribe.html",
        {"state": state, "one_click": ONE_CLICK, **context},
        status_code=status_code,
    )


def company_name(ledger: Ledger, tenant_id: str) -> str:
    """The sender's name as the recipient knows it."""
    company = ledger.load(Company, Company.id_for(tenant_id))
    return company.name if company is not None else "the sender"


def already_suppressed(ledger: Ledger, message: Message) -> bool:
    """Whether marketing email on the message's channel reaches none of its
    recipients now."""
    for address in message.to:
        try:
            check_not_suppressed(
                ledger,
                message.tenant_id,
                Channel(message.channel),
                [address],
                MARKETING,
            )
        except RecipientSuppressed:
            continue
        return False
    return True


def unsubscribe_router(ledger: Ledger, secret: bytes | None, path: str) -> APIRouter:
    """The confirmation page and the one-click POST, under `path`."""
    router = APIRouter(prefix=path, tags=["unsubscribe"])

    @router.get(
        "/{token}",
        response_class=HTMLResponse,
        responses={404: HTML_RESPONSES[404], 503: HTML_RESPONSES[503]},
    )
    def confirm_unsubscribe(request: Request, token: str) -> Response:
        """A page asking the recipient to confirm; it records nothing."""
        message = marketing_message(ledger, linked_message_id(token, secret))
        if message is None:
            return page(request, "refused", 404)
        return page(
            request,
            "done" if already_suppressed(ledger, message) else "confirm",
            addresses=message.to,
            company=company_name(ledger, message.tenant_id),
        )

    @router.post("/{token}", response_class=HTMLResponse, responses=HTML_RESPONSES)
    def unsubscribe(
        request: Request, token: str, one_click: OneClickField = None
    ) -> Response:
        """Suppress the recipients of the marketing email the link came in."""
        message = marketing_message(ledger, linked_message_id(token, secret))
        if message is None:
            return page(request, "refused", 404)
        if one_click != ONE_CLICK:
            return page(request, "bad_request", 400)

        try:
            suppressions = unsubscribe_by_link(ledger, message.id)
        except NotFound:
            return page(request, "refused", 404)
        logger.info("message %s: recipients unsubscribed by one-click link", message.id)

        return page(
            request,
            "done",
            addresses=[s.address for s in suppressions],
            company=company_name(ledger, message.tenant_id),
        )

    return router
