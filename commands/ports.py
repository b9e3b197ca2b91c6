"""What the use cases need from the outside world, and the send policy."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class SendPolicy:
    """Limits on what one send may contain; set from configuration."""

    max_sms_segments: int = 10
    attachment_limit_bytes: int = 25 * MEGABYTE


@runtime_checkable
class BatchReader(Protocol):
    """A recorder that reads the events of many aggregates in one query.

    Given `after` (one version per id, 0 for none known), it leaves out each
    aggregate's events up to that version.
    """

    def select_events_of(
        self, aggregate_ids: Sequence[UUID], after: Sequence[int] | None = None
    ) -> Sequence[StoredEvent]: ...


class BlobStore(Protocol):
    """Content-addressed storage for attachment bytes, keyed by SHA-256."""

    def put(self, content: bytes) -> str: ...

    def get(self, sha256: str) -> bytes: ...


class MemoryBlobStore:
    """A BlobStore in memory, for tests and throwaway ledgers."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self._blobs[digest] = content
        return digest

    def get(self, sha256: str) -> bytes:
        return self._blobs[sha256]


def now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class OutcomeKind(StrEnum):
    """How a provider answered one try at sending an attempt."""

    ACCEPTED = "accepted"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SendOutcome:
    """A provider's answer to one try, with its response kept verbatim in `detail`.

    TRANSIENT means nothing was handed over and a later try may succeed;
    UNKNOWN means the provider may have taken the message (a timeout after the
    data was sent), so a later try must reuse the same Message-ID or key.
    """

    kind: OutcomeKind
    provider: str
    reason: str = ""
    provider_message_id: str | None = None
    accepted: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """Whether trying again cannot change the answer."""
        return self.kind in {OutcomeKind.ACCEPTED, OutcomeKind.PERMANENT}


@dataclass(frozen=True)
class OutgoingAttachment:
    """An attachment's name, media type and bytes, read from the blob store."""

    name: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class OutgoingEmail:
    """One attempt at an email, with everything a provider needs to send it."""

    message_id: UUID
    attempt: int
    message_id_header: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    text: str = ""
    html: str | None = None
    reply_to: str | None = None
    list_unsubscribe: tuple[str, ...] = ()
    automated: bool = False
    attachments: tuple[OutgoingAttachment, ...] = ()

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc + self.bcc


@dataclass(frozen=True)
class OutgoingSms:
    """One attempt at an SMS; `idempotency_key` is the same on every try."""

    message_id: UUID
    attempt: int
    sender: str
    to: str
    body: str
    idempotency_key: str


class EmailProvider(Protocol):
    """Hands emails to a mail service; answers every try with a SendOutcome."""

    name: str

    async def send_email(self, email: OutgoingEmail) -> SendOutcome: ...

    async def close(self) -> None: ...


class SmsProvider(Protocol):
    """Hands text messages to an SMS service; answers every try with a SendOutcome."""

    name: str

    async def send_sms(self, sms: OutgoingSms) -> SendOutcome: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class OutboundSummary:
    """What inbound threading compares of an outbound message."""

    message_id: UUID
    occurred_at: datetime
    channel: str
    sender: str
    to: list[str]
    subject: str | None


class ThreadingIndex(Protocol):
    """Read models that spare inbound threading a scan of the whole log.

    Each answer comes with the log position it is complete to; the caller
    reads the log after that position itself, so a lagging read model never
    hides a change. None means the read model has not been built yet, and the
    caller reads the whole log.
    """

    def address_owners(
        self, tenant_id: str, channel: str, address: str
    ) -> tuple[dict[UUID, str], int] | None:
        """Customers (aggregate id: customer key) whose current address it is."""
        ...

    def outbound_messages(
        self, tenant_id: str, customer_id: str, channel: str
    ) -> tuple[list[OutboundSummary], int] | None:
        """The customer's outbound messages on the channel, in log order."""
        ...

    def close(self) -> None:
        """Let go of any connection the index holds."""
        ...
