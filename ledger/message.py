"""The Message aggregate: one email or SMS, outbound or inbound, and its history.

A message is never edited. It is created by Queued (outbound) or Received
(inbound) and then only gains events: provider outcomes per attempt, retries and
replies. Every event carries the tenant and customer it concerns and
`occurred_at`, the time it happened (the provider's time where one exists),
beside the library's `timestamp`, the time the ledger recorded it.

Event classes are stored by topic (``ledger.message:Message.Sent``): renaming
one needs `eventsourcing.utils.register_topic`, and changing fields needs a new
`class_version` with an `upcast_vN_vN+1` method.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from ledger.errors import InvalidTransition
from ledger.status import RETRYABLE, AttemptFacts
from ledger.values import Direction, Status

MESSAGE_NAMESPACE = uuid.UUID("6f1c1d53-3f5e-4c51-9a55-1f0f4b7f3c20")


def idempotent_message_id(tenant_id: str, idempotency_key: str) -> uuid.UUID:
    """The id a message sent with this key gets, so a repeat finds the original."""
    return uuid.uuid5(MESSAGE_NAMESPACE, f"{tenant_id}\x1f{idempotency_key}")


class Message(Aggregate):
    """An email or SMS exchanged with one customer of one tenant."""

    class Event(Aggregate.Event):
        tenant_id: str
        customer_id: str
        occurred_at: datetime

    class Queued(Event, Aggregate.Created):
        """An outbound message was accepted and waits to be sent."""

        class_version = 1
        direction: str
        channel: str
        category: str
        sender: str
        to: list[str]
        cc: list[str]
        bcc: list[str]
        subject: str | None
        text: str
        html: str | None
        template_id: str | None
        template_version: int | None
        merge_values: dict[str, str]
        attachments: list[dict[str, Any]]
        sent_by: dict[str, str | None]
        idempotency_key: str | None
        fingerprint: str
        sms_encoding: str | None
        sms_segments: int | None
        resend_of: str | None

        def apply(self, message: Message) -> None:
            message.start(self, Direction.OUTBOUND)
            message.category = self.category
            message.template_id = self.template_id
            message.template_version = self.template_version
            message.merge_values = dict(self.merge_values)
            message.idempotency_key = self.idempotency_key
            message.fingerprint = self.fingerprint
            message.sms_segments = self.sms_segments
            message.resend_of = self.resend_of

        def mutate(self, aggregate: Any) -> Any:
            return Message.created_by(self, aggregate)

    class Received(Event, Aggregate.Created):
        """An inbound message from a customer was recorded."""

        class_version = 1
        channel: str
        sender: str
        to: list[str]
        cc: list[str]
        subject: str | None
        text: str
        html: str | None
        attachments: list[dict[str, Any]]
        provider: str
        provider_message_id: str | None
        in_reply_to: str | None
        auto_reply: bool
        headers: dict[str, str]
        sent_by: dict[str, str | None]

        def apply(self, message: Message) -> None:
            message.start(self, Direction.INBOUND)
            message.in_reply_to = self.in_reply_to
            message.auto_reply = self.auto_reply

        def mutate(self, aggregate: Any) -> Any:
            return Message.created_by(self, aggregate)

    class ProviderEvent(Event):
        """Base of the outcomes a provider reports for one attempt."""

        attempt: int
        provider: str
        provider_event_id: str | None
        detail: dict[str, Any]

        def apply(self, message: Message) -> None:
            if self.provider_event_id:
                message.seen_provider_events.add(self.provider_event_id)
            self.set_fact(message.attempt(self.attempt))

        def set_fact(self, attempt: AttemptFacts) -> None:
            raise NotImplementedError

    class Sent(ProviderEvent):
        """The provider accepted the attempt for delivery."""

        class_version = 1
        provider_message_id: str
        accepted: list[str]
        refused: dict[str, str]

        def apply(self, message: Message) -> None:
            super().apply(message)
            message.provider_message_ids[self.provider_message_id] = self.attempt

        def set_fact(self, attempt: AttemptFacts) -> None:
            attempt.sent = True

    class Delivered(ProviderEvent):
        """The recipient's server or carrier confirmed delivery."""

        class_version = 1
        recipient: str | None

        def set_fact(self, attempt: AttemptFacts) -> None:
            attempt.sent = attempt.delivered = True

    class Opened(ProviderEvent):
        """The recipient opened the message; `machine` marks privacy-proxy opens."""

        class_version = 1
        recipient: str | None
        machine: bool

        def set_fact(self, attempt: AttemptFacts) -> None:
            attempt.sent = attempt.delivered = attempt.opened = True

    class Bounced(ProviderEvent):
        """The recipient's server refused the message after it was sent."""

        class_version = 1
        recipient: str | None
        hard: bool
        status_code: str | None
        diagnostic: str | None

        def set_fact(self, attempt: AttemptFacts) -> None:
            attempt.sent = attempt.bounced = True

    class Failed(ProviderEvent):
        """The attempt could not be sent; `permanent` says a retry will not help."""

        class_version = 1
        reason: str
        permanent: bool

        def set_fact(self, attempt: AttemptFacts) -> None:
            attempt.failed = True

    class Retried(Event):
        """Someone asked for a new attempt at a failed or bounced message.

        `idempotency_key` names the request (over the broker, its Nats-Msg-Id),
        so that the same request arriving again is known for a repeat.
        """

        class_version = 2
        attempt: int
        requested_by: dict[str, str | None]
        idempotency_key: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            """Retries recorded before version 2 carry no key."""
            state["idempotency_key"] = None

        def apply(self, message: Message) -> None:
            message.attempts[self.attempt] = AttemptFacts(self.attempt)
            message.current_attempt = self.attempt
            if self.idempotency_key is not None:
                message.retry_keys[self.idempotency_key] = self.attempt

    class ReplyReceived(Event):
        """The customer answered this message; `reply_id` is the inbound message."""

        class_version = 1
        reply_id: str
        auto_reply: bool

        def apply(self, message: Message) -> None:
            message.replies.append(self.reply_id)

    @classmethod
    def queue(cls, message_id: uuid.UUID, **fields: Any) -> Message.Queued:
        """The Queued event that creates an outbound message.

        A send needs only the new message's id back, so the event is made on
        its own; projecting the aggregate from it (as `_create` does) would
        cost more than the event. Loading the message later folds this same
        event through `Queued.apply`.
        """
        return cls.Queued(
            originator_id=message_id,
            originator_version=cls.INITIAL_VERSION,
            timestamp=cls.Queued.create_timestamp(),
            originator_topic=MESSAGE_TOPIC,
            **fields,
        )

    @staticmethod
    def created_by(event: Queued | Received, aggregate: Any) -> Any:
        """The message a creation event makes, as the library's `Created.mutate`
        makes it, without inspecting signatures on every call.

        The library resolves the class from the event's `originator_topic`,
        calls `__base_init__` with the id, version and timestamp, then
        `__init__` with the event fields it names (Message defines no
        `__init__`, so none) and `apply`. Any other topic, an `__init__` added
        later, or an aggregate given where none should be, takes the library's
        own way.
        """
        if (
            aggregate is not None
            or event.originator_topic != MESSAGE_TOPIC
            or Message.__init__ is not object.__init__
        ):
            return Aggregate.Created.mutate(event, aggregate)
        message = object.__new__(Message)
        message.__base_init__(
            event.originator_id, event.originator_version, event.timestamp
        )
        event.apply(message)
        return message

    def start(self, created: Queued | Received, direction: Direction) -> None:
        """Set the state both kinds of creation share."""
        self.tenant_id = created.tenant_id
        self.customer_id = created.customer_id
        self.occurred_at = created.occurred_at
        self.direction = direction
        self.channel = created.channel
        self.sender = created.sender
        self.to = list(created.to)
        self.cc = list(created.cc)
        self.bcc = list(getattr(created, "bcc", []))
        self.subject = created.subject
        self.text = created.text
        self.html = created.html
        self.attachments = [dict(a) for a in created.attachments]
        self.sent_by = dict(created.sent_by)
        self.category = "transactional"
        self.template_id: str | None = None
        self.template_version: int | None = None
        self.merge_values: dict[str, str] = {}
        self.idempotency_key: str | None = None
        self.fingerprint = ""
        self.sms_segments: int | None = None
        self.resend_of: str | None = None
        self.in_reply_to: str | None = None
        self.auto_reply = False
        self.current_attempt = 1
        self.attempts = {1: AttemptFacts(1)}
        self.provider_message_ids: dict[str, int] = {}
        self.retry_keys: dict[str, int] = {}
        self.seen_provider_events: set[str] = set()
        self.replies: list[str] = []

    @property
    def status(self) -> Status:
        if self.direction == Direction.INBOUND:
            return Status.RECEIVED
        return self.attempts[self.current_attempt].status

    def attempt(self, number: int) -> AttemptFacts:
        """The facts of attempt `number`, created if a provider reports it first."""
        if number not in self.attempts:
            self.attempts[number] = AttemptFacts(number)
        return self.attempts[number]

    def has_seen(self, provider_event_id: str | None) -> bool:
        return provider_event_id is not None and (
            provider_event_id in self.seen_provider_events
        )

    def record_provider_event(
        self, event_class: type[ProviderEvent], **fields: Any
    ) -> bool:
        """Record one provider outcome unless the same provider event came before.

        Returns whether an event was appended.
        """
        if self.has_seen(fields.get("provider_event_id")):
            return False
        if fields.get("attempt") is None:
            fields["attempt"] = self.current_attempt
        self.trigger_event(
            event_class,
            tenant_id=self.tenant_id,
            customer_id=self.customer_id,
            **fields,
        )
        return True

    def attempt_retried_by(self, idempotency_key: str | None) -> int | None:
        """The attempt an earlier retry under this key started, if one did."""
        if idempotency_key is None:
            return None
        return self.retry_keys.get(idempotency_key)

    def retry(
        self,
        requested_by: dict[str, str | None],
        occurred_at: datetime,
        idempotency_key: str | None = None,
    ) -> int:
        """Start a new attempt; only failed or bounced outbound messages may."""
        if self.direction != Direction.OUTBOUND or self.status not in RETRYABLE:
            raise InvalidTransition(
                f"Message {self.id} is {self.status}; only failed or bounced "
                "outbound messages can be retried."
            )
        number = max(self.attempts) + 1
        self.trigger_event(
            self.Retried,
            tenant_id=self.tenant_id,
            customer_id=self.customer_id,
            occurred_at=occurred_at,
            attempt=number,
            requested_by=requested_by,
            idempotency_key=idempotency_key,
        )
        return number

    def add_reply(self, reply: Message, occurred_at: datetime) -> None:
        """Link an inbound message that answers this one."""
        if str(reply.id) in self.replies:
            return
        self.trigger_event(
            self.ReplyReceived,
            tenant_id=self.tenant_id,
            customer_id=self.customer_id,
            occurred_at=occurred_at,
            reply_id=str(reply.id),
            auto_reply=reply.auto_reply,
        )

    @property
    def replied(self) -> bool:
        return bool(self.replies)

    @property
    def preview(self) -> str:
        """The first non-blank line of the text body."""
        for line in self.text.splitlines():
            if line.strip():
                return line.strip()
        return ""

    @property
    def counterpart(self) -> str:
        """The customer's side: recipients of outbound, sender of inbound."""
        if self.direction == Direction.INBOUND:
            return self.sender
        return ", ".join(self.to)


MESSAGE_TOPIC = get_topic(Message)
