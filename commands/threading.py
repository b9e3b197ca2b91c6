"""Where an inbound message belongs: which customer, and which message it answers.

Email is threaded in this order, the first match winning:

1. the signed plus-address token in a recipient (`reply+<id>.<mac>@…`);
2. In-Reply-To, then References, against the Message-IDs the ledger sent;
3. the sender's address and the subject, against that customer's emails;
4. the customer who owns the sender's address, with no message answered;
5. otherwise the tenant's unmatched list.

An SMS is threaded by the pair (customer number, our number) to the latest
outbound SMS between them. An address that several customers share is not
guessed at: the message goes to the unmatched list.

Customers are found by address, and a customer's outbound messages listed,
from the ledger's `ThreadingIndex` (the directory and timeline views) up to
the position it is complete to, and from the log after that position. Without
an index, or before its views are built, the whole log's directory and
creation events are read: correct, and linear in the size of the log.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from eventsourcing.utils import get_topic

from commands.access import require
from commands.application import Decision, Ledger
from commands.history import creation_events
from commands.inbound import decide_inbound, inbound_message_id
from commands.models import RecordInbound
from commands.ports import OutboundSummary, now
from ledger.directory import Customer
from ledger.errors import InvalidTransition, NotFound
from ledger.mail_identity import (
    REPLY_PREFIX,
    parse_message_id_header,
    parse_reply_address,
)
from ledger.message import Message
from ledger.provider_events import UnmatchedInbound
from ledger.values import Attribution, Channel, Direction, Permission, Principal

logger = logging.getLogger(__name__)

SCAN_PAGE = 1000
DIRECTORY_TOPICS = (get_topic(Customer.Registered), get_topic(Customer.Updated))
_REPLY_TOKEN = re.compile(r"^reply\+(?P<id>[0-9a-f]{32})\.", re.IGNORECASE)
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|antw|fwd?|wg|tr|rv)\s*(?:\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class InboundEmail:
    """A customer's email as parsed: the parts threading and the record need."""

    sender: str
    recipients: list[str]
    to: list[str]
    cc: list[str]
    subject: str | None
    text: str
    html: str | None
    message_id: str | None
    references: list[str]
    auto_reply: bool
    attachments: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None
    provider: str = "smtp"

    @property
    def key(self) -> str:
        """What makes a redelivery of the same email recognisable."""
        return f"email\x1f{self.message_id or self.headers.get('X-Ledger-Raw-SHA256')}"


@dataclass(frozen=True)
class InboundSms:
    """A customer's SMS as the provider posted it."""

    sender: str
    our_number: str
    text: str
    provider_message_id: str
    provider: str = "twilio"
    occurred_at: datetime | None = None

    @property
    def key(self) -> str:
        """What makes a redelivery of the same SMS recognisable."""
        return f"sms\x1f{self.provider}\x1f{self.provider_message_id}"


@dataclass(frozen=True)
class Thread:
    """Where an inbound message goes: a customer (or none) and what it answers."""

    customer_id: str | None
    answers: uuid.UUID | None
    matched_by: str


@dataclass(frozen=True)
class InboundReceipt:
    """What became of an inbound message."""

    message_id: uuid.UUID
    customer_id: str | None
    answers: uuid.UUID | None
    matched_by: str

    @property
    def unmatched(self) -> bool:
        """Whether no customer could be found for the message."""
        return self.customer_id is None


def thread_email(
    ledger: Ledger, tenant_id: str, email: InboundEmail, secret: bytes | None
) -> Thread:
    """Find the customer and the message an inbound email answers."""
    if secret is not None:
        for recipient in email.recipients:
            answered = by_reply_token(ledger, tenant_id, recipient, secret)
            if answered is not None:
                return Thread(answered.customer_id, answered.id, "reply-address")
    for reference in email.references:
        answered = by_message_id_header(ledger, tenant_id, reference)
        if answered is not None:
            return Thread(answered.customer_id, answered.id, "message-id")
    owners = customers_owning(ledger, tenant_id, Channel.EMAIL, email.sender)
    if len(owners) != 1:
        return Thread(None, None, "unmatched")
    customer_id = owners[0]
    subject = normal_subject(email.subject)
    if subject:
        answered_id = latest_outbound(
            ledger,
            tenant_id,
            customer_id,
            Channel.EMAIL,
            lambda message: normal_subject(message.subject) == subject,
        )
        if answered_id is not None:
            return Thread(customer_id, answered_id, "sender-and-subject")
    return Thread(customer_id, None, "sender")


def thread_sms(ledger: Ledger, tenant_id: str, sms: InboundSms) -> Thread:
    """Find the customer and the latest outbound SMS between the two numbers."""
    owners = customers_owning(ledger, tenant_id, Channel.SMS, sms.sender)
    if len(owners) != 1:
        return Thread(None, None, "unmatched")
    customer_id = owners[0]
    answered_id = latest_outbound(
        ledger,
        tenant_id,
        customer_id,
        Channel.SMS,
        lambda message: message.sender == sms.our_number and sms.sender in message.to,
    )
    if answered_id is None:
        return Thread(customer_id, None, "sender")
    return Thread(customer_id, answered_id, "number-pair")


def by_reply_token(
    ledger: Ledger, tenant_id: str, address: str, secret: bytes
) -> Message | None:
    """The outbound message a signed reply address names, if genuine."""
    match = _REPLY_TOKEN.match(address.strip().strip("<>"))
    if match is None or not address.lower().startswith(REPLY_PREFIX):
        return None
    message_id = parse_reply_address(address, secret)
    if message_id is None or message_id.hex != match["id"].lower():
        return None
    return outbound_in_tenant(ledger, tenant_id, message_id)


def by_message_id_header(ledger: Ledger, tenant_id: str, header: str) -> Message | None:
    """The outbound message one of our Message-IDs names."""
    parsed = parse_message_id_header(header)
    if parsed is None:
        return None
    return outbound_in_tenant(ledger, tenant_id, parsed[0])


def outbound_in_tenant(
    ledger: Ledger, tenant_id: str, message_id: uuid.UUID
) -> Message | None:
    """The tenant's outbound message with this id, or None."""
    message = ledger.load(Message, message_id)
    if message is None or message.tenant_id != tenant_id:
        return None
    if message.direction != Direction.OUTBOUND:
        return None
    return message


def normal_subject(subject: str | None) -> str:
    """The subject without reply and forward prefixes, spaces folded, lower case."""
    if not subject:
        return ""
    return " ".join(_SUBJECT_PREFIX.sub("", subject).split()).lower()


def customers_owning(
    ledger: Ledger, tenant_id: str, channel: Channel, address: str
) -> list[str]:
    """The tenant's customers whose current email or cell phone is `address`."""
    wanted = address.strip().lower()
    owners, start = indexed_owners(ledger, tenant_id, channel, wanted)

    # Registered and Updated both carry the whole contact record, so each
    # event read after the index's answer settles its customer either way.
    keys: dict[uuid.UUID, str | None] = {}
    for event in directory_events(ledger, start):
        customer = event.originator_id
        if isinstance(event, Customer.Registered):
            keys[customer] = event.customer_id if event.tenant_id == tenant_id else None
        elif customer not in keys:
            keys[customer] = customer_key_in(ledger, tenant_id, customer)
        key = keys[customer]
        if key is None:
            continue
        value = event.email if channel == Channel.EMAIL else event.cell_phone
        if value and value.lower() == wanted:
            owners[customer] = key
        else:
            owners.pop(customer, None)
    return sorted(owners.values())


def indexed_owners(
    ledger: Ledger, tenant_id: str, channel: Channel, address: str
) -> tuple[dict[uuid.UUID, str], int]:
    """The owners the index knows of, and the log position to read on from."""
    index = ledger.threading_index
    found = None
    if index is not None:
        found = index.address_owners(tenant_id, channel.value, address)
    if found is None:
        return {}, 1
    owners, position = found
    return owners, position + 1


def customer_key_in(ledger: Ledger, tenant_id: str, customer: uuid.UUID) -> str | None:
    """The customer's key if the customer is the tenant's, else None."""
    found = ledger.load(Customer, customer)
    if found is None or found.tenant_id != tenant_id:
        return None
    return found.customer_id


def directory_events(ledger: Ledger, start: int = 1) -> Iterator[Any]:
    """Every customer Registered and Updated event from `start`, oldest first."""
    while True:
        page = ledger.recorder.select_notifications(
            start, SCAN_PAGE, topics=DIRECTORY_TOPICS
        )
        for notification in page:
            yield ledger.mapper.to_domain_event(notification)
        if len(page) < SCAN_PAGE:
            return
        start = page[-1].id + 1


def latest_outbound(
    ledger: Ledger,
    tenant_id: str,
    customer_id: str,
    channel: Channel,
    fits: Callable[[OutboundSummary], bool],
) -> uuid.UUID | None:
    """The newest outbound message to the customer that `fits` accepts."""
    indexed, start = indexed_outbound(ledger, tenant_id, customer_id, channel)
    best: OutboundSummary | None = None
    later = outbound_after(ledger, tenant_id, customer_id, start)
    for message in chain(indexed, later):
        if message.channel != channel.value or not fits(message):
            continue
        if best is None or message.occurred_at >= best.occurred_at:
            best = message
    return None if best is None else best.message_id


def indexed_outbound(
    ledger: Ledger, tenant_id: str, customer_id: str, channel: Channel
) -> tuple[list[OutboundSummary], int]:
    """The messages the index knows of, and the log position to read on from."""
    index = ledger.threading_index
    found = None
    if index is not None:
        found = index.outbound_messages(tenant_id, customer_id, channel.value)
    if found is None:
        return [], 1
    messages, position = found
    return messages, position + 1


def outbound_after(
    ledger: Ledger, tenant_id: str, customer_id: str, start: int
) -> Iterator[OutboundSummary]:
    """The customer's outbound messages created at log position `start` or later."""
    for event in creation_events(ledger, start):
        if not isinstance(event, Message.Queued):
            continue
        if event.tenant_id != tenant_id or event.customer_id != customer_id:
            continue
        yield OutboundSummary(
            message_id=event.originator_id,
            occurred_at=event.occurred_at,
            channel=event.channel,
            sender=event.sender,
            to=list(event.to),
            subject=event.subject,
        )


def record_email(
    ledger: Ledger,
    principal: Principal,
    email: InboundEmail,
    thread: Thread,
) -> InboundReceipt:
    """Record a threaded email under its customer, or keep it as unmatched."""
    if thread.customer_id is None:
        return keep_unmatched(
            ledger,
            principal.tenant_id,
            email.key,
            {
                "channel": Channel.EMAIL.value,
                "sender": email.sender,
                "to": email.to,
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
                "attachments": email.attachments,
                "provider": email.provider,
                "provider_message_id": email.message_id,
                "auto_reply": email.auto_reply,
                "headers": email.headers,
                "occurred_at": email.occurred_at or now(),
            },
        )
    command = RecordInbound(
        customer_id=thread.customer_id,
        channel=Channel.EMAIL,
        sender=email.sender,
        to=email.to,
        cc=email.cc,
        subject=email.subject,
        body=email.text,
        html=email.html,
        in_reply_to=str(thread.answers) if thread.answers else None,
        auto_reply=email.auto_reply,
        provider=email.provider,
        provider_message_id=email.message_id,
        headers=email.headers,
        occurred_at=email.occurred_at,
        attachments=email.attachments,
        inbound_key=email.key,
    )
    message_id = ledger.execute(lambda: decide_inbound(ledger, principal, command))
    logger.info("inbound email %s recorded (%s)", message_id, thread.matched_by)
    return InboundReceipt(
        message_id, thread.customer_id, thread.answers, thread.matched_by
    )


def record_sms(
    ledger: Ledger, principal: Principal, sms: InboundSms, thread: Thread
) -> InboundReceipt:
    """Record a threaded SMS under its customer, or keep it as unmatched."""
    if thread.customer_id is None:
        return keep_unmatched(
            ledger,
            principal.tenant_id,
            sms.key,
            {
                "channel": Channel.SMS.value,
                "sender": sms.sender,
                "to": [sms.our_number],
                "subject": None,
                "text": sms.text,
                "html": None,
                "attachments": [],
                "provider": sms.provider,
                "provider_message_id": sms.provider_message_id,
                "auto_reply": False,
                "headers": {},
                "occurred_at": sms.occurred_at or now(),
            },
        )
    command = RecordInbound(
        customer_id=thread.customer_id,
        channel=Channel.SMS,
        sender=sms.sender,
        to=[sms.our_number],
        body=sms.text,
        in_reply_to=str(thread.answers) if thread.answers else None,
        provider=sms.provider,
        provider_message_id=sms.provider_message_id,
        occurred_at=sms.occurred_at,
        inbound_key=sms.key,
    )
    message_id = ledger.execute(lambda: decide_inbound(ledger, principal, command))
    logger.info("inbound sms %s recorded (%s)", message_id, thread.matched_by)
    return InboundReceipt(
        message_id, thread.customer_id, thread.answers, thread.matched_by
    )


def keep_unmatched(
    ledger: Ledger, tenant_id: str, key: str, fields: dict[str, Any]
) -> InboundReceipt:
    """Keep an inbound message in the unmatched list, once per key."""
    unmatched_id = UnmatchedInbound.id_for(tenant_id, key)

    def decide() -> Decision[uuid.UUID]:
        if ledger.load(UnmatchedInbound, unmatched_id) is not None:
            return Decision(unmatched_id)
        kept = UnmatchedInbound._create(
            UnmatchedInbound.Kept, id=unmatched_id, tenant_id=tenant_id, **fields
        )
        return Decision(kept.id, [kept])

    kept_id = ledger.execute(decide)
    logger.info("inbound %s %s kept as unmatched", fields["channel"], kept_id)
    return InboundReceipt(kept_id, None, None, "unmatched")


def unmatched_inbound(ledger: Ledger, principal: Principal) -> list[UnmatchedInbound]:
    """The company's unmatched inbound messages not yet filed, newest first."""
    require(principal, Permission.VIEW)
    tenant_id = principal.tenant_id
    found: list[UnmatchedInbound] = []
    start = 1
    topics = (get_topic(UnmatchedInbound.Kept),)
    while True:
        page = ledger.recorder.select_notifications(start, SCAN_PAGE, topics=topics)
        for notification in page:
            event: Any = ledger.mapper.to_domain_event(notification)
            if event.tenant_id == tenant_id:
                kept = ledger.load(UnmatchedInbound, event.originator_id)
                if kept is not None and kept.filed_as is None:
                    found.append(kept)
        if len(page) < SCAN_PAGE:
            break
        start = page[-1].id + 1
    return sorted(found, key=lambda kept: kept.occurred_at, reverse=True)


def inbound_id(tenant_id: str, key: str) -> uuid.UUID:
    """The id an inbound message with this key is recorded under."""
    return inbound_message_id(tenant_id, key)


def thread_import(
    ledger: Ledger,
    tenant_id: str,
    email: InboundEmail,
    secret: bytes | None,
    customer_id: str,
) -> Thread:
    """Thread an email a teammate imports for a customer they name.

    The same order as `thread_email`, but only among that customer's messages:
    the teammate's word on whose email it is stands.
    """
    found = thread_email(ledger, tenant_id, email, secret)
    if found.customer_id == customer_id and found.answers is not None:
        return found
    subject = normal_subject(email.subject)
    if subject:
        answered_id = latest_outbound(
            ledger,
            tenant_id,
            customer_id,
            Channel.EMAIL,
            lambda message: normal_subject(message.subject) == subject,
        )
        if answered_id is not None:
            return Thread(customer_id, answered_id, "customer-and-subject")
    return Thread(customer_id, None, "customer")


def file_unmatched(
    ledger: Ledger, principal: Principal, unmatched_key: str, customer_id: str
) -> uuid.UUID:
    """File an unmatched inbound message under a customer, as its inbound message."""
    require(principal, Permission.CREATE)
    unmatched_id = message_id_of(unmatched_key, "unmatched message")

    def decide() -> Decision[uuid.UUID]:
        unmatched = ledger.load_in_tenant(
            UnmatchedInbound,
            unmatched_id,
            principal.tenant_id,
            "unmatched message",
            unmatched_key,
        )
        if unmatched.filed_as is not None:
            raise InvalidTransition(
                f"Unmatched message {unmatched_key} is already filed as message "
                f"{unmatched.filed_as}; open that one instead."
            )
        kept = unmatched.kept
        command = RecordInbound(
            customer_id=customer_id,
            channel=Channel(unmatched.channel),
            sender=unmatched.sender,
            to=kept["to"],
            subject=unmatched.subject,
            body=unmatched.text,
            html=kept["html"],
            auto_reply=kept["auto_reply"],
            provider=kept["provider"],
            provider_message_id=kept["provider_message_id"],
            headers=kept["headers"],
            occurred_at=unmatched.occurred_at,
            attachments=kept["attachments"],
            inbound_key=f"unmatched\x1f{unmatched.id}",
        )
        recorded = decide_inbound(ledger, principal, command)
        unmatched.file(
            customer_id, recorded.result, Attribution(principal.user_id).as_dict()
        )
        return Decision(recorded.result, [*recorded.aggregates, unmatched])

    message_id = ledger.execute(decide)
    logger.info("unmatched %s filed as message %s", unmatched_id, message_id)
    return message_id


def message_id_of(key: str, label: str) -> uuid.UUID:
    """The UUID a key names; anything else is as missing as an unknown id."""
    try:
        return uuid.UUID(key)
    except ValueError:
        raise NotFound(label, key) from None
