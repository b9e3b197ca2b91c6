"""How an email carries the ledger's message id, so replies find their way back.

Two keys travel with every outbound email:

- `Message-ID: <{message id}.{attempt}@{domain}>`, the same on every try of one
  attempt, so a resend after an unknown outcome is a duplicate the receiving
  side can recognise; replies quote it in In-Reply-To and References.
- `Reply-To: reply+{message id hex}.{mac}@{domain}`, a plus-address signed with
  the tenant's secret. Some providers rewrite Message-ID; the Reply-To address
  survives, and the signature stops anyone forging a thread for another message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

REPLY_PREFIX = "reply+"
MAC_LENGTH = 16

_MESSAGE_ID = re.compile(
    r"<?(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"\.(?P<attempt>\d+)@[^>]+>?",
    re.IGNORECASE,
)
_REPLY_ADDRESS = re.compile(
    r"^reply\+(?P<id>[0-9a-f]{32})\.(?P<mac>[0-9a-f]+)@", re.IGNORECASE
)


def message_id_header(message_id: uuid.UUID, attempt: int, domain: str) -> str:
    """The RFC 5322 Message-ID for one attempt of a message."""
    return f"<{message_id}.{attempt}@{domain}>"


def parse_message_id_header(value: str) -> tuple[uuid.UUID, int] | None:
    """The message id and attempt a Message-ID of ours names, else None."""
    match = _MESSAGE_ID.search(value.strip())
    if match is None:
        return None
    return uuid.UUID(match["id"]), int(match["attempt"])


def reply_address(message_id: uuid.UUID, domain: str, secret: bytes) -> str:
    """The signed plus-address a reply to this message should go to."""
    return f"{REPLY_PREFIX}{message_id.hex}.{_mac(message_id, secret)}@{domain}"


def parse_reply_address(address: str, secret: bytes) -> uuid.UUID | None:
    """The message id a signed reply address names, or None if forged or foreign."""
    match = _REPLY_ADDRESS.match(address.strip().strip("<>"))
    if match is None:
        return None
    message_id = uuid.UUID(hex=match["id"])
    if not hmac.compare_digest(match["mac"].lower(), _mac(message_id, secret)):
        return None
    return message_id


def _mac(message_id: uuid.UUID, secret: bytes) -> str:
    digest = hmac.new(secret, message_id.bytes, hashlib.sha256).hexdigest()
    return digest[:MAC_LENGTH]
