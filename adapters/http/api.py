"""The JSON API, scoped by company: /api/{company}/…"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from adapters.http.auth import CompanyPrincipal, ServicesDep
from adapters.http.errors import ERROR_RESPONSES, ProjectionsNotServed
from adapters.http.reading import (
    MAX_PAGE,
    TimelineQuery,
    company_templates,
)
from adapters.http.schemas import (
    CustomerIn,
    CustomerOut,
    DeliveryReport,
    DeliveryRow,
    MessageDetail,
    Preview,
    Receipt,
    Report,
    RetryOutcome,
    Segments,
    SegmentsRequest,
    SendRequest,
    TemplateIn,
    TemplateOut,
    TemplateVersionOut,
    ThreadsOut,
    TimelineOut,
    customer_out,
    message_detail,
    template_out,
)
from commands.access import require
from commands.delivery import get_message, retry_message
from commands.directory import get_customer, upsert_customer
from commands.history import message_history
from commands.models import (
    RetryMessage,
    SaveTemplate,
    SendMessage,
    UpsertCustomer,
    parse,
)
from commands.send import preview_message
from commands.templates import get_template, save_template
from ledger.errors import InvalidCommand, LedgerError, NotFound
from ledger.sms import count_segments
from ledger.values import Channel, Direction, Permission, Status

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/{company}", responses=ERROR_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a send safely: the same key returns the first message.",
    ),
]


@router.post(
    "/messages",
    status_code=201,
    response_model=Receipt,
    responses={200: {"model": Receipt, "description": "A repeat of an earlier send"}},
    tags=["messages"],
)
def send(
    request: SendRequest,
    principal: CompanyPrincipal,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Receipt:
    """Queue an email or SMS to a customer; 201 when new, 200 for a repeat."""
    try:
        command = parse(SendMessage, request.command_fields(idempotency_key))
        receipt = services.sends.send(principal, command)
    except LedgerError as exc:
        services.metrics.send_failures.labels(type(exc).__name__).inc()
        raise
    outcome = "accepted" if receipt.created else "repeated"
    services.metrics.sends.labels(request.channel.value, outcome).inc()
    if receipt.created:
        logger.info("message %s queued by %s", receipt.message_id, principal.user_id)
    else:
        response.status_code = 200
    return Receipt(
        message_id=str(receipt.message_id),
        status=receipt.status,
        created=receipt.created,
    )


@router.post("/messages/preview", response_model=Preview, tags=["messages"])
def preview(
    request: SendRequest, principal: CompanyPrincipal, services: ServicesDep
) -> Preview:
    """Render and check a message as a send would; nothing is recorded."""
    command = parse(SendMessage, request.command_fields(None))
    draft = preview_message(services.ledger, principal, command)
    return Preview(
        channel=draft.channel,
        sender=draft.sender,
        to=draft.to,
        cc=draft.cc,
        bcc=draft.bcc,
        subject=draft.subject,
        text=draft.text,
        html=draft.html,
        template=draft.template_id and f"{draft.template_id} v{draft.template_version}",
        sms_encoding=draft.sms_encoding,
        sms_segments=draft.sms_segments,
    )


@router.post("/sms/segments", response_model=Segments, tags=["messages"])
def segments(
    request: SegmentsRequest, principal: CompanyPrincipal, services: ServicesDep
) -> Segments:
    """How many SMS segments a body is billed as, and the configured limit."""
    require(principal, Permission.VIEW)
    count = count_segments(request.body)
    return Segments(
        encoding=count.encoding,
        segments=count.segments,
        units=count.units,
        limit=services.ledger.policy.max_sms_segments,
    )


@router.post(
    "/messages/{message_id}/retry", response_model=RetryOutcome, tags=["messages"]
)
def retry(
    message_id: str, principal: CompanyPrincipal, services: ServicesDep
) -> RetryOutcome:
    """Start a new attempt at a failed or bounced message."""
    try:
        command = parse(RetryMessage, {"message_id": message_id})
        outcome = retry_message(services.ledger, principal, command)
    except LedgerError as exc:
        services.metrics.send_failures.labels(type(exc).__name__).inc()
        raise
    services.metrics.retries.inc()
    logger.info("message %s retried by %s", outcome.message_id, principal.user_id)
    return RetryOutcome(
        message_id=str(outcome.message_id),
        status=outcome.status,
        attempt=outcome.attempt,
    )


@router.get("/messages/{message_id}", response_model=MessageDetail, tags=["messages"])
def detail(
    message_id: str, principal: CompanyPrincipal, services: ServicesDep
) -> MessageDetail:
    """One message in full: recipients, body, attachments and every event."""
    message, history = message_history(services.ledger, principal, message_id)
    return message_detail(message, history)


@router.get(
    "/messages/{message_id}/attachments/{sha256}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
    tags=["messages"],
)
def attachment(
    message_id: str, sha256: str, principal: CompanyPrincipal, services: ServicesDep
) -> Response:
    """The bytes of one of the message's attachments."""
    message = get_message(services.ledger, principal, message_id)
    for item in message.attachments:
        if item["sha256"] == sha256:
            content = services.ledger.blobs.get(sha256)
            return Response(
                content,
                media_type=item["media_type"],
                headers={"Content-Disposition": disposition(item["name"])},
            )
    raise NotFound("attachment", sha256)


def disposition(name: str) -> str:
    """A Content-Disposition naming the file, with only safe characters."""
    safe = "".join(c for c in name if c.isalnum() or c in "._- ") or "attachment"
    return f'attachment; filename="{safe}"'


@router.get(
    "/customers/{customer_id}/messages", response_model=TimelineOut, tags=["timeline"]
)
def timeline(
    customer_id: str,
    principal: CompanyPrincipal,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=200, description="Search text")] = None,
    channel: Channel | None = None,
    direction: Direction | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> TimelineOut:
    """The customer's messages, newest first, filtered and paged by cursor."""
    query = TimelineQuery(q or None, channel, direction, status, limit, cursor)
    page = services.timeline(services.ledger, principal, customer_id, query)
    return TimelineOut(
        customer_id=customer_id,
        total=page.total,
        messages=page.rows,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/customers/{customer_id}/threads", response_model=ThreadsOut, tags=["timeline"]
)
def threads(
    customer_id: str, principal: CompanyPrincipal, services: ServicesDep
) -> ThreadsOut:
    """The customer's conversations, most recently active first."""
    found = services.threads(services.ledger, principal, customer_id)
    return ThreadsOut(customer_id=customer_id, threads=found)


@router.get("/reports/status", response_model=Report, tags=["reports"])
def report(
    principal: CompanyPrincipal,
    services: ServicesDep,
    since: datetime | None = None,
) -> Report:
    """How many of the company's messages stand in each status, per channel."""
    return Report(**services.status(services.ledger, principal, since))


@router.get(
    "/reports/delivery/{report}", response_model=list[DeliveryRow], tags=["reports"]
)
def delivery(
    report: DeliveryReport,
    principal: CompanyPrincipal,
    services: ServicesDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[DeliveryRow]:
    """Counts and rates of each delivery stage, grouped as the report names."""
    require(principal, Permission.VIEW)
    if services.reports is None:
        raise ProjectionsNotServed("reporting")
    return services.reports(services.ledger, principal, report.value, since, until)


@router.get("/templates", response_model=list[TemplateOut], tags=["templates"])
def templates(principal: CompanyPrincipal, services: ServicesDep) -> list[TemplateOut]:
    """The company's templates with their latest version."""
    return [template_out(t) for t in company_templates(services.ledger, principal)]


@router.get("/templates/{template_id}", response_model=TemplateOut, tags=["templates"])
def template(
    template_id: str, principal: CompanyPrincipal, services: ServicesDep
) -> TemplateOut:
    """One template with its latest version."""
    return template_out(get_template(services.ledger, principal, template_id))


@router.post(
    "/templates/{template_id}/versions",
    status_code=201,
    response_model=TemplateVersionOut,
    tags=["templates"],
)
def save_version(
    template_id: str,
    request: TemplateIn,
    principal: CompanyPrincipal,
    services: ServicesDep,
) -> TemplateVersionOut:
    """Save a new version of a template (creating the template if new)."""
    command = parse(SaveTemplate, {"template_id": template_id, **request.model_dump()})
    try:
        version = save_template(services.ledger, principal, command)
    except InvalidCommand as exc:
        # The domain calls the body `text`; this API calls it `body`, as sends do.
        if exc.field == "text":
            exc.field = "body"
        raise
    logger.info("template %s v%s saved", template_id, version.number)
    return TemplateVersionOut(
        number=version.number,
        subject=version.subject,
        text=version.text,
        html=version.html,
        merge_tags=list(version.merge_tags),
    )


@router.get("/customers/{customer_id}", response_model=CustomerOut, tags=["customers"])
def customer(
    customer_id: str, principal: CompanyPrincipal, services: ServicesDep
) -> CustomerOut:
    """One customer and the channels they can be reached on."""
    return customer_out(get_customer(services.ledger, principal, customer_id))


@router.put("/customers/{customer_id}", response_model=CustomerOut, tags=["customers"])
def put_customer(
    customer_id: str,
    request: CustomerIn,
    principal: CompanyPrincipal,
    services: ServicesDep,
) -> CustomerOut:
    """Add a customer, or change their details."""
    command = parse(
        UpsertCustomer, {"customer_id": customer_id, **request.model_dump()}
    )
    return customer_out(upsert_customer(services.ledger, principal, command))
