"""Signed session cookies for staff: the user's id and an expiry, under an HMAC.

The cookie holds no permissions: each request loads the user again, so a
changed permission or a deactivated user takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

COOKIE_NAME = "ledger_session"


def sign(secret: bytes, payload: str) -> str:
    """The HMAC-SHA256 of `payload` under `secret`, in hex."""
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def session_value(secret: bytes, user_id: uuid.UUID, hours: int) -> str:
    """A cookie value naming `user_id`, valid for `hours`."""
    payload = f"{user_id.hex}.{int(time.time()) + hours * 3600}"
    return f"{payload}.{sign(secret, payload)}"


def session_user(secret: bytes, value: str) -> uuid.UUID | None:
    """The user a cookie value names, or None if it is forged, damaged or expired."""
    payload, _, mac = value.rpartition(".")
    if not hmac.compare_digest(sign(secret, payload), mac):
        return None
    user_hex, _, expires = payload.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return None
    try:
        return uuid.UUID(hex=user_hex)
    except ValueError:
        return None
