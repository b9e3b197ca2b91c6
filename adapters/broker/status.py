"""Message status changes, published from the event log for other services.

A tracked consumer of the log, not a second write: the commands record events
and nothing else, and this publisher follows the log from the last position it
recorded. Each change goes to `<root>.<tenant>.status.<event>` on the outbox
stream with `Nats-Msg-Id` = message id and version, and the position advances
only after the server has acknowledged the whole batch. A restart may publish
the last batch again; the stream's duplicate window drops those repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    Notification,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import get_topic
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

from adapters.broker.intake import MESSAGE_ID_HEADER
from adapters.broker.messages import StatusChanged
from adapters.broker.settings import BrokerSettings, is_subject_token
from commands.application import Ledger
from ledger.errors import StoreUnavailable
from ledger.message import Message

logger = logging.getLogger(__name__)

TRACKING_NAME = "broker-status"

STATUS_EVENTS: tuple[type[Message.Event], ...] = (
    Message.Queued,
    Message.Received,
    Message.Sent,
    Message.Delivered,
    Message.Opened,
    Message.Bounced,
    Message.Failed,
    Message.Retried,
)
STATUS_TOPICS = [get_topic(event_class) for event_class in STATUS_EVENTS]


@dataclass(frozen=True)
class StatusChange:
    """One status event of one message, ready to publish."""

    position: int
    subject: str
    message_id: str
    body: StatusChanged


class StatusPublisher:
    """Publishes every message status event once per log position, in order."""

    def __init__(
        self, ledger: Ledger, settings: BrokerSettings, jetstream: JetStreamContext
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.jetstream = jetstream
        self.tracking: TrackingRecorder = ledger.factory.tracking_recorder()
        self.position: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set, waiting out store and broker faults."""
        while not stopping.is_set():
            try:
                published = await self.publish_next()
            except (StoreUnavailable, PersistenceError, NatsError, TimeoutError) as exc:
                logger.warning("status publishing paused: %s", exc)
                self.position = None
                published = 0
                await wait_or_stop(stopping, self.settings.retry_delays[0])
            if published < self.settings.status_batch:
                await wait_or_stop(stopping, self.settings.status_poll)

    async def publish_next(self) -> int:
        """Publish the next batch of status changes; returns how many."""
        if self.position is None:
            self.position = await asyncio.to_thread(self.recorded_position)
        changes, last = await asyncio.to_thread(self.read_changes, self.position)
        if last is None:
            return 0
        await asyncio.gather(*(self.publish(change) for change in changes))
        await asyncio.to_thread(self.record_position, last)
        self.position = last
        logger.info("published %s status changes up to position %s", len(changes), last)
        return len(changes)

    def recorded_position(self) -> int:
        return self.tracking.max_tracking_id(TRACKING_NAME) or 0

    def record_position(self, position: int) -> None:
        try:
            self.tracking.insert_tracking(Tracking(TRACKING_NAME, position))
        except IntegrityError:
            # Another publisher recorded it first; both published the same
            # changes, and the stream kept one copy of each.
            logger.info("status position %s was already recorded", position)

    def read_changes(self, after: int) -> tuple[list[StatusChange], int | None]:
        """The status changes after `after`, and the last position read."""
        notifications = self.ledger.recorder.select_notifications(
            after,
            self.settings.status_batch,
            topics=STATUS_TOPICS,
            inclusive_of_start=False,
        )
        if not notifications:
            return [], None
        return self.changes_of(notifications), notifications[-1].id

    def changes_of(self, notifications: Sequence[Notification]) -> list[StatusChange]:
        """Each event with its message as it stood right after that event."""
        events = [self.ledger.mapper.to_domain_event(n) for n in notifications]
        history = self.ledger.read_history(UUID(str(e.originator_id)) for e in events)
        changes = []
        for notification, event in zip(notifications, events, strict=True):
            tenant_id = str(getattr(event, "tenant_id", ""))
            if not is_subject_token(tenant_id):
                logger.warning(
                    "tenant '%s' cannot be a subject token; status of message %s "
                    "not published",
                    tenant_id,
                    event.originator_id,
                )
                continue
            message = message_at(
                history[UUID(str(event.originator_id))], event.originator_version
            )
            changes.append(
                status_change(self.settings, notification.id, event, message)
            )
        return changes

    async def publish(self, change: StatusChange) -> None:
        await self.jetstream.publish(
            change.subject,
            change.body.model_dump_json().encode(),
            stream=self.settings.outbox_stream,
            headers={MESSAGE_ID_HEADER: change.message_id},
        )


def message_at(events: Sequence[Any], version: int) -> Message:
    """The message folded from its events up to and including `version`."""
    message = None
    for event in events:
        if event.originator_version > version:
            break
        message = event.mutate(message)
    if not isinstance(message, Message):
        raise StoreUnavailable(
            f"The log names a message event at version {version} that could not "
            "be read back; try again."
        )
    return message


def status_change(
    settings: BrokerSettings, position: int, event: Any, message: Message
) -> StatusChange:
    """What other services hear about one event of a message."""
    name = type(event).__name__
    body = StatusChanged(
        message_id=str(message.id),
        tenant_id=message.tenant_id,
        customer_id=message.customer_id,
        channel=message.channel,
        direction=message.direction.value,
        event=name,
        status=message.status.value,
        attempt=getattr(event, "attempt", message.current_attempt),
        reason=getattr(event, "reason", None),
        idempotency_key=message.idempotency_key,
        sent_by=message.sent_by,
        occurred_at=event.occurred_at.isoformat(),
        recorded_at=event.timestamp.isoformat(),
        position=position,
    )
    return StatusChange(
        position=position,
        subject=settings.subject(message.tenant_id, "status", name.lower()),
        message_id=f"{message.id}/{event.originator_version}",
        body=body,
    )


async def wait_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less if `stopping` is set meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return
