"""Inbound email as the standard library's email package reads it (RFC 5322).

One entry point, `read_email`, turns the raw bytes of a message into either a
customer's email (`InboundEmail`) or a bounce (`DeliveryReport`):

- `multipart/report; report-type=delivery-status` (RFC 3464) is a bounce; so
  is a plain-text bounce from a mailer daemon that names its failed recipients
  in `X-Failed-Recipients` (Exim's classic form).
- `Auto-Submitted` other than `no` (RFC 3834), `X-Autoreply`, `X-Autorespond`,
  `Precedence: auto_reply|bulk|junk` and "Automatic reply:" subjects mark
  auto-replies.
- Mail to a signed `unsubscribe+<token>@…` address (the List-Unsubscribe
  mailto the dispatcher sets) suppresses that message's recipients.
- A forward to the import address is unwrapped: an attached `message/rfc822`
  or an inline "Forwarded message" block becomes the message recorded.

The text kept is the reply without its quoted history; HTML is sanitised with
nh3; attachments and the raw message go to the blob store by SHA-256.
"""

from __future__ import annotations

import re
import uuid
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import nh3

from commands.access import require
from commands.application import Ledger
from commands.directory import get_customer
from commands.ports import BlobStore
from commands.threading import (
    InboundEmail,
    InboundReceipt,
    record_email,
    thread_email,
    thread_import,
)
from commands.tracking import (
    DeliveryReport,
    RecipientReport,
    ReportReceipt,
    record_delivery_report,
    record_mail_unsubscribe,
    system_principal,
)
from ledger.errors import InvalidCommand
from ledger.mail_identity import REPLY_PREFIX, parse_reply_address
from ledger.values import Permission, Principal

KEPT_HEADERS = (
    "Message-ID",
    "In-Reply-To",
    "References",
    "Date",
    "From",
    "To",
    "Cc",
    "Subject",
    "Auto-Submitted",
    "X-Autoreply",
    "Precedence",
)
RAW_DIGEST_HEADER = "X-Ledger-Raw-SHA256"
# The dispatcher's List-Unsubscribe mailto: the reply token under this prefix.
UNSUBSCRIBE_PREFIX = "unsubscribe+"
AUTO_PRECEDENCE = {"auto_reply", "bulk", "junk"}
AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?reply|out of (the )?office|autoresponse)"
    r"\s*:",
    re.IGNORECASE,
)
DAEMON_SENDER = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
MESSAGE_ID_LINE = re.compile(r"^Message-ID:\s*(<[^>]+>)", re.IGNORECASE | re.MULTILINE)

ATTRIBUTION = [
    re.compile(r"^On\b.{0,300}\bwrote:$", re.DOTALL),
    re.compile(r"^Le\b.{0,300}\ba écrit\s?:$", re.DOTALL),
    re.compile(r"^Am\b.{0,300}\bschrieb.{0,200}:$", re.DOTALL),
    re.compile(r"^El\b.{0,300}\bescribió:$", re.DOTALL),
    re.compile(r"^-{2,}\s*Original Message\s*-{2,}$", re.IGNORECASE),
    re.compile(r"^-{2,}\s*Forwarded message\s*-{2,}$", re.IGNORECASE),
    re.compile(r"^Begin forwarded message:$", re.IGNORECASE),
]
FORWARD_MARKER = re.compile(
    r"^(-{2,}\s*Forwarded message\s*-{2,}|Begin forwarded message:"
    r"|-{2,}\s*Original Message\s*-{2,})\s*$",
    re.IGNORECASE | re.MULTILINE,
)
OUTLOOK_SEPARATOR = re.compile(r"^_{10,}$")
BLOCK_END = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h\d)\b[^>]*>", re.IGNORECASE)


def accept_email(
    ledger: Ledger,
    tenant_id: str,
    raw: bytes,
    *,
    envelope_recipients: list[str] | None = None,
    forwarded_by: str | None = None,
    reply_secret: bytes | None = None,
    provider: str = "smtp",
) -> InboundReceipt | list[ReportReceipt]:
    """Record an email that arrived for the tenant: a reply, a bounce or an opt-out.

    `forwarded_by` names the teammate who forwarded it to the import address;
    the forwarded original is recorded, attributed to them.
    """
    parsed = read_email(
        raw,
        ledger.blobs,
        envelope_recipients=envelope_recipients,
        forwarded=forwarded_by is not None,
        provider=provider,
    )
    if isinstance(parsed, DeliveryReport):
        return record_delivery_report(ledger, tenant_id, parsed)
    unsubscribed = unsubscribe_target(parsed.recipients, reply_secret)
    if unsubscribed is not None:
        return record_mail_unsubscribe(ledger, tenant_id, unsubscribed)
    thread = thread_email(ledger, tenant_id, parsed, reply_secret)
    principal = system_principal(tenant_id)
    if forwarded_by is not None:
        principal = Principal(tenant_id, forwarded_by, principal.permissions)
    return record_email(ledger, principal, parsed, thread)


def unsubscribe_target(
    recipients: list[str], reply_secret: bytes | None
) -> uuid.UUID | None:
    """The message whose signed `unsubscribe+<token>@…` mailto this mail went to."""
    if reply_secret is None:
        return None
    for recipient in recipients:
        local, _, domain = recipient.strip("<>").partition("@")
        if local.lower().startswith(UNSUBSCRIBE_PREFIX):
            token = local[len(UNSUBSCRIBE_PREFIX) :]
            signed = f"{REPLY_PREFIX}{token}@{domain}"
            message_id = parse_reply_address(signed, reply_secret)
            if message_id is not None:
                return message_id
    return None


def import_email(
    ledger: Ledger,
    principal: Principal,
    raw: bytes,
    customer_id: str,
    reply_secret: bytes | None = None,
) -> InboundReceipt:
    """Record a customer's email a teammate saved from their own inbox."""
    require(principal, Permission.CREATE)
    get_customer(ledger, principal, customer_id)
    parsed = read_email(raw, ledger.blobs, provider="import")
    if isinstance(parsed, DeliveryReport):
        raise InvalidCommand(
            "message",
            "This file is a bounce, not a customer's email; the ledger records "
            "bounces from the inbound listener on its own.",
        )
    thread = thread_import(
        ledger, principal.tenant_id, parsed, reply_secret, customer_id
    )
    return record_email(ledger, principal, parsed, thread)


def read_email(
    raw: bytes,
    blobs: BlobStore,
    *,
    envelope_recipients: list[str] | None = None,
    forwarded: bool = False,
    provider: str = "smtp",
) -> InboundEmail | DeliveryReport:
    """A customer's email or a bounce, from the raw bytes of a message."""
    message = parse_bytes(raw)
    digest = blobs.put(raw)
    if is_delivery_report(message):
        return delivery_report(message, digest)
    if forwarded:
        message = unwrap_forward(message)
    return inbound_email(message, digest, blobs, envelope_recipients or [], provider)


def parse_bytes(raw: bytes) -> EmailMessage:
    """The parsed message, or InvalidCommand when it is not one."""
    if not raw.strip():
        raise InvalidCommand(
            "message", "The message is empty; send the raw RFC 5322 bytes."
        )
    message = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(message, EmailMessage) or not message.keys():
        raise InvalidCommand(
            "message", "The body is not an RFC 5322 message; send the raw .eml bytes."
        )
    if not addresses(message, "From"):
        raise InvalidCommand(
            "message", "The message has no From address; send the whole message."
        )
    return message


def inbound_email(
    message: EmailMessage,
    digest: str,
    blobs: BlobStore,
    envelope_recipients: list[str],
    provider: str,
) -> InboundEmail:
    """A customer's email, its text cut to the reply and its parts stored."""
    to = addresses(message, "To")
    cc = addresses(message, "Cc")
    delivered = addresses(message, "Delivered-To") + addresses(message, "X-Original-To")
    text = body_text(message)
    html = body_html(message)
    headers = {name: header(message, name) for name in KEPT_HEADERS if name in message}
    headers[RAW_DIGEST_HEADER] = digest
    references = message_ids(header(message, "In-Reply-To"))
    references += list(reversed(message_ids(header(message, "References"))))
    return InboundEmail(
        sender=addresses(message, "From")[0],
        recipients=[*envelope_recipients, *to, *cc, *delivered],
        to=to,
        cc=cc,
        subject=header(message, "Subject") or None,
        text=without_quoted_history(text),
        html=html and nh3.clean(html),
        message_id=header(message, "Message-ID") or None,
        references=references,
        auto_reply=is_auto_reply(message),
        attachments=store_attachments(message, blobs),
        headers=headers,
        occurred_at=date_of(message),
        provider=provider,
    )


def header(message: Message, name: str) -> str:
    """A header's value unfolded to one line, or an empty string."""
    value = message.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def addresses(message: Message, name: str) -> list[str]:
    """The lower-cased addresses a header names."""
    values = [str(value) for value in message.get_all(name, [])]
    return [address.lower() for _, address in getaddresses(values) if "@" in address]


def message_ids(value: str) -> list[str]:
    """The <message-id> tokens in a header value."""
    return re.findall(r"<[^<>\s]+>", value)


def date_of(message: Message) -> Any:
    """The Date header as a datetime, or None when it is unreadable."""
    try:
        return parsedate_to_datetime(header(message, "Date"))
    except (TypeError, ValueError):
        return None


def is_auto_reply(message: Message) -> bool:
    """Whether the message says it was sent by a machine (RFC 3834 and habits)."""
    if header(message, "Auto-Submitted").lower() not in {"", "no"}:
        return True
    if header(message, "X-Autoreply") or header(message, "X-Autorespond"):
        return True
    if header(message, "Precedence").lower() in AUTO_PRECEDENCE:
        return True
    return bool(AUTO_SUBJECT.match(header(message, "Subject")))


def body_text(message: EmailMessage) -> str:
    """The plain-text body, or the HTML body's text when there is none."""
    part = message.get_body(preferencelist=("plain",))
    if part is not None:
        return content_text(part)
    html = body_html(message)
    if html:
        return nh3.clean(BLOCK_END.sub("\n", html), tags=set()).strip()
    return ""


def body_html(message: EmailMessage) -> str | None:
    """The HTML body as sent (sanitise before use), or None."""
    part = message.get_body(preferencelist=("html",))
    return content_text(part) if part is not None else None


def content_text(part: Message) -> str:
    """A text part decoded, tolerating unknown charsets."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, UnicodeDecodeError):
        payload = part.get_payload(decode=True)
        content = (
            payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        )
    return content if isinstance(content, str) else ""


def without_quoted_history(text: str) -> str:
    """The reply as written, without the history mail clients quote below it."""
    lines = text.replace("\r\n", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if starts_history(lines, index):
            break
        if OUTLOOK_SEPARATOR.match(stripped) and next_starts(lines, index, "From:"):
            break
        if stripped.startswith("From:") and next_starts(lines, index, "Sent:"):
            break
        if not stripped.startswith(">"):
            kept.append(line.rstrip())
    reply = "\n".join(kept).strip()
    return reply or text.strip()


def starts_history(lines: list[str], index: int) -> bool:
    """Whether an attribution line ("On … wrote:"), wrapped or not, starts here."""
    for span in (1, 2, 3):
        joined = " ".join(line.strip() for line in lines[index : index + span])
        if any(pattern.match(joined) for pattern in ATTRIBUTION):
            return True
    return False


def next_starts(lines: list[str], index: int, prefix: str) -> bool:
    """Whether one of the next two non-blank lines starts with `prefix`."""
    following = [line.strip() for line in lines[index + 1 : index + 4] if line.strip()]
    return any(line.startswith(prefix) for line in following[:2])


def store_attachments(message: EmailMessage, blobs: BlobStore) -> list[dict[str, Any]]:
    """Put each attachment in the blob store; return its metadata."""
    stored = []
    for part in message.iter_attachments():
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):
            content = part.as_bytes()
        stored.append(
            {
                "name": part.get_filename() or "attachment",
                "media_type": part.get_content_type(),
                "size": len(content),
                "sha256": blobs.put(content),
            }
        )
    return stored


def unwrap_forward(message: EmailMessage) -> EmailMessage:
    """The message a teammate forwarded: attached, inline, or the message itself."""
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], EmailMessage):
                return inner[0]
    return inline_forward(message) or message


def inline_forward(message: EmailMessage) -> EmailMessage | None:
    """The message quoted under an inline "Forwarded message" marker, if any."""
    text = body_text(message).replace("\r\n", "\n")
    marker = FORWARD_MARKER.search(text)
    if marker is None:
        return None
    block = text[marker.end() :].lstrip("\n").split("\n")
    fields: dict[str, str] = {}
    for index, line in enumerate(block):
        if not line.strip():
            body = "\n".join(block[index + 1 :]).strip()
            break
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    else:
        return None
    if "from" not in fields:
        return None
    forwarded = EmailMessage(policy=policy.default)
    forwarded["From"] = fields["from"]
    for name in ("to", "cc", "subject"):
        if fields.get(name):
            forwarded[name.title()] = fields[name]
    forwarded.set_content(body + "\n")
    return forwarded


def is_delivery_report(message: EmailMessage) -> bool:
    """Whether the message is a bounce rather than a person's email."""
    if message.get_content_type() == "multipart/report":
        return str(message.get_param("report-type", "")).lower() == "delivery-status"
    sender = addresses(message, "From")
    return bool(header(message, "X-Failed-Recipients")) and bool(
        sender and DAEMON_SENDER.match(sender[0])
    )


def delivery_report(message: EmailMessage, digest: str) -> DeliveryReport:
    """The failed recipients and original Message-ID a bounce names."""
    recipients: list[RecipientReport] = []
    originals: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            recipients.extend(recipient_blocks(part))
        elif kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                originals += message_ids(header(inner[0], "Message-ID"))
        elif kind == "text/rfc822-headers":
            returned = HeaderParser(policy=policy.default).parsestr(content_text(part))
            originals += message_ids(header(returned, "Message-ID"))
    text = body_text(message)
    if not recipients:
        recipients = failed_recipients_header(message, text)
    originals += MESSAGE_ID_LINE.findall(text)
    originals += message_ids(header(message, "In-Reply-To"))
    return DeliveryReport(
        report_id=header(message, "Message-ID") or digest,
        original_message_ids=originals,
        recipients=recipients,
        detail={
            "from": header(message, "From"),
            "subject": header(message, "Subject"),
            RAW_DIGEST_HEADER: digest,
        },
    )


def recipient_blocks(part: Message) -> list[RecipientReport]:
    """The per-recipient blocks of a message/delivery-status part."""
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return []
    found = []
    for block in blocks[1:]:
        if not isinstance(block, Message):
            continue
        recipient = after_type(header(block, "Final-Recipient")) or after_type(
            header(block, "Original-Recipient")
        )
        if not recipient:
            continue
        diagnostic = after_type(header(block, "Diagnostic-Code")) or None
        status = header(block, "Status") or None
        if status is None and diagnostic:
            code = STATUS_CODE.search(diagnostic)
            status = code and code.group(1)
        found.append(
            RecipientReport(
                recipient=recipient.strip("<>").lower(),
                action=header(block, "Action").lower() or "failed",
                status=status,
                diagnostic=diagnostic,
            )
        )
    return found


def after_type(value: str) -> str:
    """`rfc822; ada@example.com` → `ada@example.com` (RFC 3464 typed fields)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def failed_recipients_header(message: Message, text: str) -> list[RecipientReport]:
    """Recipients of a plain bounce that lists them in X-Failed-Recipients."""
    code = STATUS_CODE.search(text)
    diagnostic = next(
        (line.strip() for line in text.splitlines() if code and code.group(1) in line),
        None,
    )
    return [
        RecipientReport(
            recipient=address.strip().lower(),
            action="failed",
            status=code.group(1) if code else "5.0.0",
            diagnostic=diagnostic,
        )
        for address in header(message, "X-Failed-Recipients").split(",")
        if address.strip()
    ]
