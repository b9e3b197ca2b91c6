"""The JSON the API accepts and answers, and how messages become it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi.encoders import jsonable_encoder
from pydantic import Base64Bytes, BaseModel, ConfigDict, Field

from commands.history import HistoryEntry
from commands.models import MergeValue
from ledger.directory import Customer
from ledger.message import Message
from ledger.template import Template
from ledger.values import Channel, Direction, Status

FAILURE_EVENTS = frozenset({"Failed", "Bounced"})


class Strict(BaseModel):
    """A request body that refuses fields it does not know."""

    model_config = ConfigDict(extra="forbid")


class AttachmentIn(Strict):
    """An attachment to send: its name and its bytes, base64-encoded."""

    name: Annotated[str, Field(min_length=1, max_length=255)]
    content: Base64Bytes
    media_type: str | None = None


class SendRequest(Strict):
    """A message to send to a customer; omitted To means the customer's own."""

    customer_id: Annotated[str, Field(min_length=1, max_length=200)]
    channel: Channel
    to: str | None = None
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    template_id: str | None = None
    template_version: Annotated[int, Field(ge=1)] | None = None
    merge_values: dict[str, MergeValue] = Field(default_factory=dict)
    attachments: list[AttachmentIn] = Field(default_factory=list)
    category: Literal["transactional", "marketing"] = "transactional"
    trigger: str | None = None

    def command_fields(self, idempotency_key: str | None) -> dict[str, Any]:
        """The request as SendMessage fields, with the idempotency key."""
        fields = self.model_dump(exclude={"attachments"})
        fields["attachments"] = [a.model_dump() for a in self.attachments]
        fields["idempotency_key"] = idempotency_key
        return fields


class SegmentsRequest(Strict):
    """An SMS body to count segments for."""

    body: Annotated[str, Field(max_length=20000)]


class Segments(BaseModel):
    """How an SMS body is billed, and the longest allowed."""

    encoding: str
    segments: int
    units: int
    limit: int


class Receipt(BaseModel):
    """A send's answer: the message, its status and whether this call made it."""

    message_id: str
    status: Status
    created: bool


class RetryOutcome(BaseModel):
    """A retry's answer: the message, its status and the new attempt."""

    message_id: str
    status: Status
    attempt: int


class Preview(BaseModel):
    """The message a send would record, rendered; nothing stored."""

    channel: Channel
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str | None
    text: str
    html: str | None
    template: str | None
    sms_encoding: str | None
    sms_segments: int | None


class MessageRow(BaseModel):
    """One line of a timeline."""

    message_id: str
    occurred_at: datetime
    direction: Direction
    channel: Channel
    subject: str | None
    preview: str
    sender: str
    to: list[str]
    sent_by: str
    trigger: str | None
    status: Status
    replied: bool
    attachments: int


class AttachmentOut(BaseModel):
    """An attachment's metadata; its bytes are fetched by sha256."""

    name: str
    media_type: str
    size: int
    sha256: str


class HistoryItem(BaseModel):
    """One event in a message's history."""

    version: int
    event: str
    occurred_at: datetime | None
    recorded_at: datetime
    fields: dict[str, Any]


class MessageDetail(MessageRow):
    """Everything recorded about one message, with its history."""

    cc: list[str]
    bcc: list[str]
    category: str
    template: str | None
    merge_values: dict[str, Any]
    sms_segments: int | None
    attempt: int
    attachment_files: list[AttachmentOut]
    replies: list[str]
    in_reply_to: str | None
    text: str
    html: str | None
    history: list[HistoryItem]
    failure: dict[str, Any] | None


class TimelineOut(BaseModel):
    """One page of a customer's timeline and the cursor to the next."""

    customer_id: str
    total: int
    messages: list[MessageRow]
    next_cursor: str | None


class ThreadOut(BaseModel):
    """A message and the replies it received."""

    root: MessageRow
    replies: list[MessageRow]
    last_activity: datetime


class ThreadsOut(BaseModel):
    """A customer's conversations, most recently active first."""

    customer_id: str
    threads: list[ThreadOut]


class Report(BaseModel):
    """The company's messages counted by status, overall and per channel."""

    total: int
    by_status: dict[str, int]
    by_channel: dict[str, dict[str, int]]


class DeliveryReport(StrEnum):
    """How a delivery report groups messages."""

    TEMPLATES = "templates"
    CUSTOMER_TYPES = "customer-types"
    FUNNEL = "funnel"
    DAILY = "daily"


DeliveryRow = dict[str, str | int | float | None]


class TemplateVersionOut(BaseModel):
    """One saved version of a template."""

    number: int
    subject: str | None
    text: str
    html: str | None
    merge_tags: list[str]


class TemplateOut(BaseModel):
    """A template and its latest version."""

    template_id: str
    channel: Channel
    description: str
    latest: TemplateVersionOut
    versions: int


class TemplateIn(Strict):
    """A new version of a template."""

    channel: Channel
    subject: str | None = None
    body: Annotated[str, Field(min_length=1)]
    html: str | None = None
    description: str = ""


class CustomerIn(Strict):
    """A customer's details; blank email or phone means none."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    customer_type: Annotated[str, Field(min_length=1, max_length=50)] = "individual"
    email: str | None = None
    cell_phone: str | None = None


class CustomerOut(BaseModel):
    """A customer and the channels they can be reached on."""

    customer_id: str
    name: str
    customer_type: str
    email: str | None
    cell_phone: str | None
    channels: list[Channel]


class Health(BaseModel):
    """Whether the process (or its store) answers."""

    status: str


def sent_by(message: Message) -> str:
    """Who a message is attributed to: a user, System, or the customer."""
    if message.direction == Direction.INBOUND:
        return "Customer"
    return message.sent_by.get("user_id") or "System"


def message_row(message: Message) -> MessageRow:
    """The timeline's columns for one message."""
    return MessageRow(
        message_id=str(message.id),
        occurred_at=message.occurred_at,
        direction=message.direction,
        channel=Channel(message.channel),
        subject=message.subject,
        preview=message.preview,
        sender=message.sender,
        to=message.to,
        sent_by=sent_by(message),
        trigger=message.sent_by.get("trigger"),
        status=message.status,
        replied=message.replied,
        attachments=len(message.attachments),
    )


def message_detail(message: Message, history: list[HistoryEntry]) -> MessageDetail:
    """A message in full, with its history and latest failure report."""
    items = [
        HistoryItem(
            version=entry.version,
            event=entry.event,
            occurred_at=entry.occurred_at,
            recorded_at=entry.recorded_at,
            fields=jsonable_encoder(entry.fields),
        )
        for entry in history
    ]
    failures = [item.fields for item in items if item.event in FAILURE_EVENTS]
    return MessageDetail(
        **message_row(message).model_dump(),
        cc=message.cc,
        bcc=message.bcc,
        category=message.category,
        template=message.template_id
        and f"{message.template_id} v{message.template_version}",
        merge_values=jsonable_encoder(message.merge_values),
        sms_segments=message.sms_segments,
        attempt=message.current_attempt,
        attachment_files=[AttachmentOut(**a) for a in message.attachments],
        replies=message.replies,
        in_reply_to=message.in_reply_to,
        text=message.text,
        html=message.html,
        history=items,
        failure=failures[-1] if failures else None,
    )


def customer_out(customer: Customer) -> CustomerOut:
    """A customer as the API shows them."""
    channels = [Channel.EMAIL] if customer.email else []
    if customer.cell_phone:
        channels.append(Channel.SMS)
    return CustomerOut(
        customer_id=customer.customer_id,
        name=customer.name,
        customer_type=customer.customer_type,
        email=customer.email,
        cell_phone=customer.cell_phone,
        channels=channels,
    )


def template_out(template: Template) -> TemplateOut:
    """A template as the API shows it."""
    latest = template.versions[-1]
    return TemplateOut(
        template_id=template.template_id,
        channel=Channel(template.channel),
        description=template.description,
        latest=TemplateVersionOut(
            number=latest.number,
            subject=latest.subject,
            text=latest.text,
            html=latest.html,
            merge_tags=list(latest.merge_tags),
        ),
        versions=len(template.versions),
    )
