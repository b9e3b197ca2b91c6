"""Commands: what callers ask the ledger to do, validated for shape by pydantic.

Rules that depend on the customer, the company or the template (defaults,
suppression, channel-specific fields) are checked by the handlers.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from ledger.addresses import split_addresses
from ledger.errors import InvalidCommand
from ledger.values import Channel

MergeValue = str | int | float | bool | None
AddressList = Annotated[list[str], BeforeValidator(split_addresses)]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AttachmentUpload(BaseModel):
    """An attachment as uploaded: its bytes go to the blob store, not the event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=255)]
    content: bytes
    media_type: str | None = None

    @property
    def resolved_media_type(self) -> str:
        guessed, _ = mimetypes.guess_type(self.name)
        return self.media_type or guessed or "application/octet-stream"


class SendMessage(Command):
    """Record an outbound email or SMS to a customer and queue it for sending."""

    customer_id: Identifier
    channel: Channel
    to: str | None = None
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list)
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    template_id: str | None = None
    template_version: int | None = Field(default=None, ge=1)
    merge_values: dict[str, MergeValue] = Field(default_factory=dict)
    attachments: list[AttachmentUpload] = Field(default_factory=list)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    trigger: str | None = None
    category: Literal["transactional", "marketing"] = "transactional"
    resend_of: str | None = None

    @field_validator("to", "subject", "body", "html", "template_id", "trigger")
    @classmethod
    def blank_is_absent(cls, value: str | None) -> str | None:
        return value if value else None

    def fingerprint(self) -> str:
        """A digest of the command, to tell a true repeat from a reused key."""
        state = self.model_dump(mode="python", exclude={"attachments"})
        state["attachments"] = [
            [a.name, a.resolved_media_type, hashlib.sha256(a.content).hexdigest()]
            for a in self.attachments
        ]
        encoded = json.dumps(state, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()


class RetryMessage(Command):
    """Ask for a new attempt at a failed or bounced message.

    A retry under an `idempotency_key` already recorded on the message is a
    repeat of that retry: it records nothing and answers with that attempt.
    """

    message_id: Identifier
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class UpsertCustomer(Command):
    """Add a customer to the directory, or change their details."""

    customer_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    customer_type: Annotated[str, Field(min_length=1, max_length=50)] = "individual"
    email: str | None = None
    cell_phone: str | None = None

    @field_validator("email", "cell_phone")
    @classmethod
    def blank_is_absent(cls, value: str | None) -> str | None:
        return value if value else None


class RegisterCompany(Command):
    """Set up a company (the tenant) or change its senders and settings."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    email_sender: str | None = None
    sms_sender: str | None = None
    default_region: Annotated[str, Field(min_length=2, max_length=2)] = "US"


class SaveTemplate(Command):
    """Save a new version of a template; earlier versions stay."""

    template_id: Annotated[str, Field(min_length=1, max_length=100)]
    channel: Channel
    subject: str | None = None
    body: Annotated[str, Field(min_length=1)]
    html: str | None = None
    description: str = ""


SuppressionScope = Literal["all", "marketing"]


class Suppress(Command):
    """Stop messages on a channel to an address: all of them, or marketing only."""

    channel: Channel
    address: Annotated[str, Field(min_length=1, max_length=320)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    scope: SuppressionScope = "all"


class Unsuppress(Command):
    """Allow messages to a suppressed address again (in the scope it was stopped)."""

    channel: Channel
    address: Annotated[str, Field(min_length=1, max_length=320)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    scope: SuppressionScope = "all"


ProviderOutcome = Literal["sent", "delivered", "opened", "bounced", "failed"]


class RecordDeliveryEvent(Command):
    """Record what a provider reported about a message, whatever the provider."""

    message_id: Identifier
    outcome: ProviderOutcome
    provider: Annotated[str, Field(min_length=1, max_length=50)]
    provider_event_id: str | None = None
    provider_message_id: str | None = None
    attempt: int | None = Field(default=None, ge=1)
    occurred_at: datetime | None = None
    recipient: str | None = None
    machine_open: bool = False
    hard_bounce: bool = True
    status_code: str | None = None
    reason: str | None = None
    permanent: bool = True
    accepted: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)
    detail: dict[str, Any] = Field(default_factory=dict)


C = TypeVar("C", bound=BaseModel)


def parse(command_type: type[C], data: dict[str, Any]) -> C:
    """Build a command, turning pydantic's report into one InvalidCommand."""
    try:
        return command_type.model_validate(data)
    except ValidationError as exc:
        raise invalid_command(exc) from exc


def invalid_command(exc: ValidationError) -> InvalidCommand:
    """The first problem pydantic found, as a sentence naming the field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "command"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "is not a field of this command; remove it"
    elif first["type"] == "missing":
        message = "is required"
    return InvalidCommand(field, f"{field}: {message}.")


class RecordInbound(Command):
    """Record a message a customer sent us, linked to the message it answers."""

    customer_id: Identifier
    channel: Channel
    sender: Annotated[str, Field(min_length=1, max_length=320)]
    to: AddressList = Field(default_factory=list)
    subject: str | None = None
    body: str
    html: str | None = None
    in_reply_to: str | None = None
    auto_reply: bool = False
    provider: Annotated[str, Field(min_length=1, max_length=50)] = "manual"
    provider_message_id: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    occurred_at: datetime | None = None
    cc: AddressList = Field(default_factory=list)
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    inbound_key: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
