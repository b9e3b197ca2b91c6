"""HTTP endpoints providers and mail hooks call: FastAPI routers over the Ledger.

`provider_router(ledger)` serves, per tenant (the path names it):

- `POST /webhooks/{tenant}/sendgrid/events`: SendGrid's Event Webhook, a JSON
  array signed with ECDSA P-256 over timestamp + raw body;
- `POST /webhooks/{tenant}/twilio/status`: Twilio status callbacks, and
  `POST /webhooks/{tenant}/twilio/sms`: inbound SMS, both signed with
  HMAC-SHA1 over the URL and the sorted form fields;
- `POST /webhooks/{tenant}/inbound-email`: a raw RFC 5322 message, the way
  inbound-parse hooks post it, with the tenant's inbound token;
- `GET /track/{tenant}/{message}.{attempt}.{mac}.gif`: the open pixel.

`import_router(ledger, principal)` serves `POST /messages/import`, for the
HTTP app to mount behind its own authentication.

A bad signature gets 401 and a malformed body 400, and neither records
anything. In a valid SendGrid batch each event stands alone: the good ones
are recorded and the bad ones are listed in the answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from adapters.inbound_mail import accept_email, import_email
from commands.application import Ledger
from commands.models import ProviderOutcome
from commands.opt_out import apply_keyword, keyword_of
from commands.threading import InboundReceipt, InboundSms, record_sms, thread_sms
from commands.tracking import (
    ProviderReport,
    ReportReceipt,
    SentLinker,
    provider_key,
    record_pixel_open,
    record_report,
    record_reports,
    settings_of,
    system_principal,
)
from ledger.errors import InvalidCommand, LedgerError, NotFound, StoreUnavailable
from ledger.provider_settings import ProviderSettings
from ledger.values import Channel, Principal

logger = logging.getLogger(__name__)

MAX_SKEW_SECONDS = 600
# Sent events linked per request at most (pages of 500): a request must answer
# before the provider gives up; `ledger worker provider-links` does the rest.
LINK_PAGES_PER_REQUEST = 4
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
INBOUND_TOKEN = "X-Ledger-Inbound-Token"
PIXEL_MAC_LENGTH = 24
# The smallest transparent GIF: one pixel, one colour, fully transparent.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

SENDGRID_OUTCOMES: dict[str, ProviderOutcome | None] = {
    "processed": None,
    "deferred": None,
    "delivered": "delivered",
    "open": "opened",
    "click": "opened",
    "bounce": "bounced",
    "blocked": "bounced",
    "dropped": "failed",
    "spamreport": None,
    "unsubscribe": None,
    "group_unsubscribe": None,
    "group_resubscribe": None,
}
SENDGRID_SUPPRESSES = {"spamreport": "spam report", "unsubscribe": "unsubscribed"}
TWILIO_OUTCOMES: dict[str, ProviderOutcome | None] = {
    "accepted": None,
    "scheduled": None,
    "queued": None,
    "sending": None,
    "sent": None,
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "bounced",
    "failed": "failed",
    "canceled": "failed",
    "partially_delivered": None,
}
# Twilio error codes that mean the number will never take an SMS from us.
TWILIO_HARD_ERRORS = {
    "21211": "invalid number",
    "21610": "opted out at the carrier",
    "21614": "not a mobile number",
    "30005": "unknown number",
    "30006": "landline or unreachable carrier",
}
_PIXEL_PATH = re.compile(
    r"^(?P<id>[0-9a-f-]{36})\.(?P<attempt>\d+)\.(?P<mac>[0-9a-f]+)$"
)


def verify_sendgrid_signature(
    public_key: str, signature: str, timestamp: str, body: bytes
) -> bool:
    """Whether SendGrid signed `timestamp + body` with the key's private half."""
    try:
        key = load_der_public_key(base64.b64decode(public_key))
        signed = base64.b64decode(signature)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signed, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's signature: base64 HMAC-SHA1 over the URL and sorted name+value."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio_signature(
    auth_token: str, url: str, params: list[tuple[str, str]], signature: str
) -> bool:
    """Whether the X-Twilio-Signature matches, compared in constant time."""
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected, signature)


def sendgrid_report(event: Any) -> ProviderReport:
    """One SendGrid event as a provider report; InvalidCommand if malformed."""
    if not isinstance(event, dict):
        raise InvalidCommand("event", "Each SendGrid event must be a JSON object.")
    kind = event.get("event")
    event_id = event.get("sg_event_id")
    email = event.get("email")
    if kind not in SENDGRID_OUTCOMES:
        raise InvalidCommand("event", f"SendGrid event type {kind!r} is not known.")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidCommand("sg_event_id", "The event has no sg_event_id.")
    if not isinstance(email, str) or "@" not in email:
        raise InvalidCommand("email", "The event has no recipient email.")
    if kind == "bounce" and event.get("type") == "blocked":
        kind = "blocked"
    sg_message_id = event.get("sg_message_id")
    outcome = SENDGRID_OUTCOMES[kind]
    if outcome is not None and not isinstance(sg_message_id, str):
        raise InvalidCommand("sg_message_id", f"The {kind} event has no sg_message_id.")
    suppress = SENDGRID_SUPPRESSES.get(kind)
    if kind == "bounce":
        suppress = f"hard bounce {event.get('status') or ''}".strip()
    return ProviderReport(
        provider="sendgrid",
        channel=Channel.EMAIL,
        key=f"sendgrid:{event_id}",
        kind=kind,
        provider_message_id=provider_key("sendgrid", sg_message_id)
        if isinstance(sg_message_id, str)
        else None,
        outcome=outcome,
        occurred_at=timestamp_of(event.get("timestamp")),
        recipient=email.strip().lower(),
        machine_open=bool(event.get("sg_machine_open")),
        hard_bounce=kind == "bounce",
        status_code=str_or_none(event.get("status")),
        reason=str_or_none(event.get("reason") or event.get("response")),
        permanent=True,
        suppress_because=suppress,
        detail=event,
    )


def twilio_status_report(form: dict[str, str]) -> ProviderReport:
    """One Twilio status callback as a provider report; InvalidCommand if malformed."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid:
        raise InvalidCommand("MessageSid", "The callback has no MessageSid.")
    if not status:
        raise InvalidCommand("MessageStatus", "The callback has no MessageStatus.")
    if status not in TWILIO_OUTCOMES:
        raise InvalidCommand(
            "MessageStatus",
            f"MessageStatus '{status}' is not a Twilio status the ledger knows.",
        )
    code = form.get("ErrorCode") or None
    hard = TWILIO_HARD_ERRORS.get(code or "")
    return ProviderReport(
        provider="twilio",
        channel=Channel.SMS,
        key=f"twilio:{sid}:{status}:{code or ''}",
        kind=status,
        provider_message_id=sid,
        outcome=TWILIO_OUTCOMES[status],
        recipient=form.get("To") or None,
        hard_bounce=hard is not None,
        status_code=code,
        reason=f"Twilio error {code}" if code else f"Twilio reported {status}",
        permanent=hard is not None or status == "canceled" or code is None,
        suppress_because=hard,
        detail=dict(form),
    )


def timestamp_of(value: Any) -> datetime | None:
    """A provider's Unix timestamp as an aware datetime, if it is one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def str_or_none(value: Any) -> str | None:
    """A field as text, or None when it is missing or empty."""
    return str(value) if value not in (None, "") else None


def pixel_mac(secret: bytes, message_id: uuid.UUID, attempt: int) -> str:
    """The HMAC that makes a pixel URL unguessable for one attempt."""
    digest = hmac.new(secret, f"open\x1f{message_id}\x1f{attempt}".encode(), "sha256")
    return digest.hexdigest()[:PIXEL_MAC_LENGTH]


def open_pixel_url(
    base_url: str, tenant_id: str, message_id: uuid.UUID, attempt: int, secret: bytes
) -> str:
    """The signed open-tracking pixel URL for one attempt of a message."""
    mac = pixel_mac(secret, message_id, attempt)
    return f"{base_url.rstrip('/')}/track/{tenant_id}/{message_id}.{attempt}.{mac}.gif"


def is_machine_fetch(user_agent: str) -> bool:
    """Whether an open looks like a privacy proxy's prefetch, not a person.

    Apple Mail Privacy Protection fetches with a bare "Mozilla/5.0" agent; a
    request with no agent at all is a scanner.
    """
    return user_agent.strip() in {"", "Mozilla/5.0"}


def provider_router(
    ledger: Ledger,
    *,
    public_url: str | None = None,
    reply_secret: bytes | None = None,
    twilio_auth_token: str | None = None,
    max_skew_seconds: int = MAX_SKEW_SECONDS,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The provider webhooks, the inbound-email hook and the open pixel.

    `public_url` is the address Twilio calls (scheme, host and any path
    prefix), needed when a proxy changes what the app sees; by default the
    request's own URL is used. `reply_secret` is LEDGER_REPLY_SECRET, which
    signs reply addresses; `twilio_auth_token` is the platform's Twilio token,
    used for tenants that configured none of their own.
    """
    router = APIRouter(tags=["providers"])
    linker = SentLinker(ledger)

    def record_one(tenant: str, report: ProviderReport) -> ReportReceipt:
        """Link new sends, then record the report."""
        linker.catch_up(pages=LINK_PAGES_PER_REQUEST)
        return record_report(ledger, tenant, report)

    def record_batch(
        tenant: str, reports: list[tuple[int, ProviderReport]]
    ) -> tuple[list[ReportReceipt], list[dict[str, Any]]]:
        """Record the batch in one transaction; a refused report spares the rest."""
        linker.catch_up(pages=LINK_PAGES_PER_REQUEST)
        outcomes = record_reports(ledger, tenant, [report for _, report in reports])
        receipts: list[ReportReceipt] = []
        rejected: list[dict[str, Any]] = []
        for (index, report), outcome in zip(reports, outcomes, strict=True):
            if isinstance(outcome, InvalidCommand):
                rejected.append(rejection(index, report.detail, outcome))
            else:
                receipts.append(outcome)
        return receipts, rejected

    def settings_or_401(tenant: str) -> ProviderSettings:
        """The tenant's provider settings; unknown tenants look unsigned."""
        settings = settings_of(ledger, tenant)
        if settings is None:
            raise HTTPException(401, "This company has no provider settings.")
        return settings

    def twilio_form(request: Request, body: bytes, tenant: str) -> dict[str, str]:
        """The form fields, once the Twilio signature over them checks out."""
        settings = settings_or_401(tenant)
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        url = str(request.url)
        if public_url:
            url = public_url.rstrip("/") + request.url.path
            if request.url.query:
                url += "?" + request.url.query
        signature = request.headers.get(TWILIO_SIGNATURE, "")
        token = settings.twilio_auth_token or twilio_auth_token
        if not token or not verify_twilio_signature(token, url, params, signature):
            logger.info("twilio webhook for %s refused: bad signature", tenant)
            raise HTTPException(401, "The X-Twilio-Signature does not match.")
        return dict(params)

    @router.post("/webhooks/{tenant}/sendgrid/events")
    async def sendgrid_events(tenant: str, request: Request) -> JSONResponse:
        """Record a signed SendGrid batch, event by event."""
        body = await request.body()
        settings = await asyncio.to_thread(settings_or_401, tenant)
        signature = request.headers.get(SENDGRID_SIGNATURE, "")
        stamp = request.headers.get(SENDGRID_TIMESTAMP, "")
        key = settings.sendgrid_public_key
        fresh = stamp.isdigit() and abs(clock() - int(stamp)) <= max_skew_seconds
        if (
            not key
            or not fresh
            or not verify_sendgrid_signature(key, signature, stamp, body)
        ):
            logger.info("sendgrid webhook for %s refused: bad signature", tenant)
            raise HTTPException(401, "The SendGrid signature or timestamp is invalid.")
        events = json_array(body)
        reports, rejected = sendgrid_batch(events)
        receipts, refused = await asyncio.to_thread(
            guarded, record_batch, tenant, reports
        )
        rejected = sorted(rejected + refused, key=lambda r: int(r["index"]))
        if rejected:
            logger.info("sendgrid batch for %s: %d rejected", tenant, len(rejected))
        accepted = [receipt_json(receipt) for receipt in receipts]
        return JSONResponse({"accepted": accepted, "rejected": rejected})

    @router.post("/webhooks/{tenant}/twilio/status")
    async def twilio_status(tenant: str, request: Request) -> JSONResponse:
        """Record a signed Twilio status callback."""
        body = await request.body()
        form = await asyncio.to_thread(twilio_form, request, body, tenant)
        report = as_400(lambda: twilio_status_report(form))
        receipt = await asyncio.to_thread(guarded, record_one, tenant, report)
        return JSONResponse(receipt_json(receipt))

    @router.post("/webhooks/{tenant}/twilio/sms")
    async def twilio_sms(tenant: str, request: Request) -> Response:
        """Record a signed inbound SMS and act on its keyword."""
        body = await request.body()
        form = await asyncio.to_thread(twilio_form, request, body, tenant)
        sms = as_400(lambda: inbound_sms(form))
        await asyncio.to_thread(guarded, receive_sms, ledger, tenant, sms)
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("/webhooks/{tenant}/inbound-email")
    async def inbound_email(tenant: str, request: Request) -> JSONResponse:
        """Record a raw RFC 5322 message an inbound-parse hook posts."""
        body = await request.body()
        settings = await asyncio.to_thread(settings_or_401, tenant)
        given = request.headers.get(INBOUND_TOKEN) or request.query_params.get(
            "token", ""
        )
        expected = settings.inbound_token
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "The inbound token does not match.")
        result = await asyncio.to_thread(
            guarded,
            accept_email,
            ledger,
            tenant,
            body,
            reply_secret=reply_secret,
            provider="inbound-hook",
        )
        return JSONResponse(inbound_json(result), status_code=201)

    @router.get("/track/{tenant}/{token}.gif")
    async def open_pixel(tenant: str, token: str, request: Request) -> Response:
        """Record an open and answer with the transparent GIF."""
        agent = request.headers.get("user-agent", "")
        await asyncio.to_thread(pixel_open, ledger, tenant, token, agent)
        # Whatever happened, answer with the image: mail clients show errors.
        return Response(
            PIXEL,
            media_type="image/gif",
            headers={"Cache-Control": "no-store, private"},
        )

    return router


def import_router(
    ledger: Ledger,
    principal: Callable[..., Principal],
    reply_secret: bytes | None = None,
) -> APIRouter:
    """`POST /messages/import?customer_id=…` with a raw .eml body, as the caller.

    `principal` is the HTTP app's dependency that authenticates the request.
    """
    router = APIRouter(tags=["messages"])

    @router.post("/messages/import", status_code=201)
    async def import_message(
        customer_id: str,
        request: Request,
        who: Principal = Depends(principal),  # noqa: B008
    ) -> JSONResponse:
        """File a customer's email for the signed-in teammate."""
        body = await request.body()
        receipt = await asyncio.to_thread(
            guarded, import_email, ledger, who, body, customer_id, reply_secret
        )
        return JSONResponse(inbound_json(receipt), status_code=201)

    return router


def json_array(body: bytes) -> list[Any]:
    """The request body as a JSON array, or a 400."""
    try:
        events = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(
            400, "The body is not JSON; send the event array."
        ) from None
    if not isinstance(events, list):
        raise HTTPException(400, "The body must be a JSON array of events.")
    return events


def as_400(build: Callable[[], Any]) -> Any:
    """Build from a payload, turning InvalidCommand into a 400."""
    try:
        return build()
    except InvalidCommand as exc:
        raise HTTPException(400, exc.message) from exc


def guarded(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a use case, mapping the ledger's errors to HTTP answers in one place."""
    try:
        return action(*args, **kwargs)
    except InvalidCommand as exc:
        raise HTTPException(400, exc.message) from exc
    except NotFound as exc:
        raise HTTPException(404, exc.message) from exc
    except StoreUnavailable as exc:
        # Providers retry on 5xx, which is what a store outage needs.
        raise HTTPException(503, exc.message) from exc
    except LedgerError as exc:
        raise HTTPException(409, exc.message) from exc


def sendgrid_batch(
    events: list[Any],
) -> tuple[list[tuple[int, ProviderReport]], list[dict[str, Any]]]:
    """The batch's well-formed events as reports, and the others with reasons."""
    reports: list[tuple[int, ProviderReport]] = []
    rejected: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        try:
            reports.append((index, sendgrid_report(event)))
        except InvalidCommand as exc:
            rejected.append(rejection(index, event, exc))
    return reports, rejected


def rejection(index: int, event: Any, exc: InvalidCommand) -> dict[str, Any]:
    """How one refused event is reported back to SendGrid."""
    event_id = event.get("sg_event_id") if isinstance(event, dict) else None
    return {"index": index, "sg_event_id": event_id, "error": exc.message}


def inbound_sms(form: dict[str, str]) -> InboundSms:
    """An inbound SMS from Twilio's form, or InvalidCommand."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    sender = form.get("From")
    ours = form.get("To")
    if not sid or not sender or not ours:
        raise InvalidCommand(
            "From", "An inbound SMS needs MessageSid, From and To; send Twilio's form."
        )
    return InboundSms(
        sender=sender,
        our_number=ours,
        text=form.get("Body", ""),
        provider_message_id=sid,
    )


def receive_sms(ledger: Ledger, tenant: str, sms: InboundSms) -> InboundReceipt:
    """Record an inbound SMS, then act on it if it is a keyword."""
    thread = thread_sms(ledger, tenant, sms)
    receipt = record_sms(ledger, system_principal(tenant), sms, thread)
    keyword = keyword_of(sms.text)
    if keyword is not None:
        apply_keyword(
            ledger,
            tenant,
            keyword,
            sms.sender,
            sms.our_number,
            thread.customer_id,
            sms.key,
        )
    return receipt


def pixel_open(ledger: Ledger, tenant: str, token: str, agent: str) -> None:
    """Record the open a pixel URL names, if its HMAC is right."""
    match = _PIXEL_PATH.match(token)
    settings = settings_of(ledger, tenant)
    if match is None or settings is None:
        return
    message_id = uuid.UUID(match["id"])
    attempt = int(match["attempt"])
    expected = pixel_mac(settings.secret, message_id, attempt)
    if not hmac.compare_digest(expected, match["mac"]):
        return
    record_pixel_open(ledger, tenant, message_id, attempt, is_machine_fetch(agent))


def receipt_json(receipt: ReportReceipt) -> dict[str, Any]:
    """A report receipt as the webhook answers it."""
    return {
        "key": receipt.key,
        "state": receipt.state,
        "message_id": receipt.message_id,
        "suppressed": receipt.suppressed,
    }


def inbound_json(result: InboundReceipt | list[ReportReceipt]) -> dict[str, Any]:
    """What an inbound endpoint answers: the message, or bounce receipts."""
    if isinstance(result, list):
        return {"bounces": [receipt_json(receipt) for receipt in result]}
    return {
        "message_id": str(result.message_id),
        "customer_id": result.customer_id,
        "answers": result.answers and str(result.answers),
        "matched_by": result.matched_by,
    }
