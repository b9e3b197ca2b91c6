"""CSRF tokens for the staff pages' forms, tied to a pre-session.

The first page with a form gives the browser a pre-session: a random value in
an HttpOnly, SameSite=Strict cookie. Every form on the pages carries a token,
the HMAC of that value under the session secret, and every form POST must
bring the cookie and the token, agreeing. Another site can make a browser post
a form here but can neither read the cookie nor compute the token, so it cannot
sign a victim in to an account of its choosing (login CSRF) or sign them out.

The pre-session exists before any sign-in, which is why the token hangs on it
rather than on the session. Signing in replaces it with a fresh one, so a
value planted in the browser beforehand is worthless afterwards. With secure
cookies the cookie is named with the `__Host-` prefix, which browsers only
accept from this host over HTTPS, so a sibling subdomain cannot plant one.

The JSON API keeps its own guard (the `X-Requested-With` header, see auth.py);
the one-click unsubscribe link is guarded by its signature (unsubscribe.py).
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated

from fastapi import Form, Request, Response

from adapters.http.auth import ServicesDep
from adapters.http.errors import FormRefused
from adapters.http.sessions import sign
from adapters.http.settings import WebSettings

PRESESSION_COOKIE = "ledger_presession"
TOKEN_FIELD = "csrf_token"
PRESESSION_SHAPE = re.compile(r"[0-9a-f]{64}")


def cookie_name(settings: WebSettings) -> str:
    """The pre-session cookie's name; `__Host-` bound to this host over HTTPS."""
    return (
        f"__Host-{PRESESSION_COOKIE}" if settings.secure_cookies else PRESESSION_COOKIE
    )


def form_token(settings: WebSettings, presession: str) -> str:
    """The token the forms of a browser holding `presession` must carry."""
    # The "form:" label keeps these MACs apart from the session cookie's.
    return sign(settings.session_secret, f"form:{presession}")


def presession_of(request: Request, settings: WebSettings) -> str | None:
    """The pre-session the browser sent, if it has the shape we give out."""
    value = request.cookies.get(cookie_name(settings), "")
    return value if PRESESSION_SHAPE.fullmatch(value) else None


def new_presession() -> str:
    """A fresh, unguessable pre-session value."""
    return secrets.token_hex(32)


def keep_presession(response: Response, settings: WebSettings, value: str) -> None:
    """Give the browser `value` as its pre-session, for this browser session."""
    response.set_cookie(
        cookie_name(settings),
        value,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )


def check_form_token(
    request: Request,
    services: ServicesDep,
    csrf_token: Annotated[str | None, Form()] = None,
) -> None:
    """Refuse a form POST whose token is missing or not this browser's."""
    settings = services.settings
    presession = presession_of(request, settings)
    if presession is None:
        raise FormRefused(
            "Your browser sent this form without the cookie the sign-in page "
            "gives it; allow cookies for this site, reload the page and try again."
        )
    expected = form_token(settings, presession)
    if not csrf_token or not hmac.compare_digest(csrf_token, expected):
        raise FormRefused(
            "This form's security token is missing or does not match this "
            "browser; it may have come from another site, or the page is out of "
            "date. Reload the page and submit the form again."
        )
