"""What providers tell us that does not (yet) belong on a message.

Providers name messages by their own ids (SendGrid's `sg_message_id`, Twilio's
MessageSid), and their reports can overtake the ledger's own record of the
send. A ProviderMessage, keyed by provider and provider message id, links the
provider's id to the ledger's message once Sent is recorded; until then it
parks the reports that arrive, and the link applies them in the same
transaction, so a report is never dropped. Reports that change no message
state (a deferral, a spam report) are noted on it as evidence.

An inbound email or SMS nobody in the directory sent is kept as an
UnmatchedInbound until someone files it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

PROVIDER_NAMESPACE = uuid.UUID("b7e4c2d1-8a3f-4e6b-9c5d-2f1a0e9b8c73")


class ProviderMessage(Aggregate):
    """A provider's id for one attempt, the ledger message it names, and reports."""

    if TYPE_CHECKING:
        tenant_id: str
        provider: str
        provider_message_id: str
        message_id: str | None
        attempt: int | None
        parked: dict[str, dict[str, Any]]
        noted: set[str]

    @staticmethod
    def id_for(tenant_id: str, provider: str, provider_message_id: str) -> uuid.UUID:
        key = f"{tenant_id}\x1f{provider}\x1f{provider_message_id}"
        return uuid.uuid5(PROVIDER_NAMESPACE, key)

    class Registered(Aggregate.Created):
        """The provider named this id first, in a report or a send."""

        class_version = 1
        tenant_id: str
        provider: str
        provider_message_id: str

        def apply(self, link: ProviderMessage) -> None:
            link.tenant_id = self.tenant_id
            link.provider = self.provider
            link.provider_message_id = self.provider_message_id
            link.message_id = None
            link.attempt = None
            link.parked = {}
            link.noted = set()

    class Linked(Aggregate.Event):
        """The ledger's message for this id is known; parked reports now apply."""

        class_version = 1
        message_id: str
        attempt: int

        def apply(self, link: ProviderMessage) -> None:
            link.message_id = self.message_id
            link.attempt = self.attempt

    class Parked(Aggregate.Event):
        """A report arrived before the message; `report` holds it whole."""

        class_version = 1
        key: str
        report: dict[str, Any]

        def apply(self, link: ProviderMessage) -> None:
            link.parked[self.key] = dict(self.report)

    class Noted(Aggregate.Event):
        """A report that changes no message state, kept as evidence."""

        class_version = 1
        key: str
        kind: str
        detail: dict[str, Any]

        def apply(self, link: ProviderMessage) -> None:
            link.noted.add(self.key)

    @property
    def linked(self) -> bool:
        return self.message_id is not None

    def has_seen(self, key: str) -> bool:
        return key in self.parked or key in self.noted

    def link(self, message_id: uuid.UUID, attempt: int) -> list[dict[str, Any]]:
        """Link the message once; returns the parked reports it must now apply."""
        if self.linked:
            return []
        self.trigger_event(self.Linked, message_id=str(message_id), attempt=attempt)
        return list(self.parked.values())

    def park(self, key: str, report: dict[str, Any]) -> bool:
        """Keep a report for later; returns whether it was new."""
        if self.has_seen(key):
            return False
        self.trigger_event(self.Parked, key=key, report=report)
        return True

    def note(self, key: str, kind: str, detail: dict[str, Any]) -> bool:
        """Keep a report that changes no message state; returns whether it was new."""
        if self.has_seen(key):
            return False
        self.trigger_event(self.Noted, key=key, kind=kind, detail=detail)
        return True


class UnmatchedInbound(Aggregate):
    """An inbound message from an address no customer of the tenant owns.

    It stays in the tenant's unmatched list until someone files it under a
    customer; filing records it as that customer's inbound message.
    """

    if TYPE_CHECKING:
        tenant_id: str
        channel: str
        sender: str
        subject: str | None
        text: str
        occurred_at: datetime
        kept: dict[str, Any]
        filed_as: str | None

    @staticmethod
    def id_for(tenant_id: str, inbound_key: str) -> uuid.UUID:
        return uuid.uuid5(
            PROVIDER_NAMESPACE, f"unmatched\x1f{tenant_id}\x1f{inbound_key}"
        )

    class Kept(Aggregate.Created):
        """The inbound message was kept in the tenant's unmatched list."""

        class_version = 1
        tenant_id: str
        channel: str
        sender: str
        to: list[str]
        subject: str | None
        text: str
        html: str | None
        attachments: list[dict[str, Any]]
        provider: str
        provider_message_id: str | None
        auto_reply: bool
        headers: dict[str, str]
        occurred_at: datetime

        def apply(self, unmatched: UnmatchedInbound) -> None:
            unmatched.tenant_id = self.tenant_id
            unmatched.channel = self.channel
            unmatched.sender = self.sender
            unmatched.subject = self.subject
            unmatched.text = self.text
            unmatched.occurred_at = self.occurred_at
            unmatched.kept = {
                "to": list(self.to),
                "html": self.html,
                "attachments": [dict(a) for a in self.attachments],
                "provider": self.provider,
                "provider_message_id": self.provider_message_id,
                "auto_reply": self.auto_reply,
                "headers": dict(self.headers),
            }
            unmatched.filed_as = None

    class Filed(Aggregate.Event):
        """Someone filed the message under a customer; `message_id` is the record."""

        class_version = 1
        customer_id: str
        message_id: str
        filed_by: dict[str, str | None]

        def apply(self, unmatched: UnmatchedInbound) -> None:
            unmatched.filed_as = self.message_id

    def file(
        self, customer_id: str, message_id: uuid.UUID, filed_by: dict[str, str | None]
    ) -> None:
        """Mark the message filed under the customer, once."""
        if self.filed_as is None:
            self.trigger_event(
                self.Filed,
                customer_id=customer_id,
                message_id=str(message_id),
                filed_by=filed_by,
            )
