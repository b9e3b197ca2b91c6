"""Provider reports: turned into message events once each, whatever their order.

A report names a message by the provider's id. When the ledger already linked
that id, the report becomes a provider event on the message; otherwise it is
parked on the ProviderMessage and applied, in the same transaction, when the
link is made. Links are made by `SentLinker`, which follows the Sent events
the dispatcher records, or at once by `record_sent`. Reports that change no
message state are noted as evidence. Spam reports, unsubscribes and hard
bounces also put the address on the tenant's suppression list, in the same
transaction as the event.

Bounces that arrive by mail (`record_delivery_report`), the open pixel
(`record_pixel_open`) and List-Unsubscribe mail (`record_mail_unsubscribe`)
are reports too, recorded the same way.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from threading import Lock
from typing import Annotated, Any, Literal, TypeVar

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic
from pydantic import Field

from commands.access import require
from commands.application import Decision, Ledger, Recordable
from commands.delivery import OUTCOME_EVENTS, Outcome, get_message, outcome_fields
from commands.models import Command, ProviderOutcome, RecordDeliveryEvent
from commands.ports import now
from commands.suppressions import decide_suppression
from ledger.errors import InvalidCommand, InvalidTransition
from ledger.mail_identity import parse_message_id_header
from ledger.message import Message
from ledger.provider_events import ProviderMessage
from ledger.provider_settings import DEFAULT_HELP_TEXT, ProviderSettings
from ledger.suppression import ALL, MARKETING, Suppression
from ledger.values import Channel, Permission, Principal

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)

SENT_TOPICS = (get_topic(Message.Sent),)
ReportState = Literal["recorded", "duplicate", "parked", "noted"]


def system_principal(tenant_id: str) -> Principal:
    """The principal provider reports act as: System, within the tenant."""
    return Principal(tenant_id, None, frozenset(Permission), "System")


@dataclass(frozen=True)
class ProviderReport:
    """One provider event, normalised: what it says about which message."""

    provider: str
    channel: Channel
    key: str
    kind: str
    provider_message_id: str | None
    outcome: ProviderOutcome | None = None
    occurred_at: datetime | None = None
    recipient: str | None = None
    machine_open: bool = False
    hard_bounce: bool = True
    status_code: str | None = None
    reason: str | None = None
    permanent: bool = True
    suppress_because: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportReceipt:
    """What became of one report."""

    key: str
    state: ReportState
    message_id: str | None = None
    suppressed: str | None = None


class ConfigureProviderSettings(Command):
    """Set how the tenant's provider webhooks are verified and what HELP answers."""

    sendgrid_public_key: str | None = None
    twilio_auth_token: str | None = None
    sms_help_text: Annotated[str, Field(min_length=1, max_length=320)] = (
        DEFAULT_HELP_TEXT
    )
    open_tracking: bool = False
    import_address: str | None = None
    inbound_token: Annotated[str, Field(min_length=16)] | None = None


def configure_provider_settings(
    ledger: Ledger, principal: Principal, command: ConfigureProviderSettings
) -> ProviderSettings:
    """Record the tenant's provider settings, or the changes to them."""
    require(principal, Permission.CREATE)
    details = command.model_dump()
    if details["import_address"]:
        details["import_address"] = details["import_address"].lower()

    def decide() -> Decision[ProviderSettings]:
        settings = ledger.load(
            ProviderSettings, ProviderSettings.id_for(principal.tenant_id)
        )
        if settings is None:
            settings = ProviderSettings._create(
                ProviderSettings.Configured,
                id=ProviderSettings.id_for(principal.tenant_id),
                tenant_id=principal.tenant_id,
                signing_secret=secrets.token_hex(32),
                **details,
            )
        elif settings.details() != details:
            settings.trigger_event(ProviderSettings.Changed, **details)
        return Decision(settings, [settings])

    return ledger.execute(decide)


def settings_of(ledger: Ledger, tenant_id: str) -> ProviderSettings | None:
    """The tenant's provider settings, or None before they are configured."""
    return ledger.load(ProviderSettings, ProviderSettings.id_for(tenant_id))


def record_sent(
    ledger: Ledger, principal: Principal, command: RecordDeliveryEvent
) -> Outcome:
    """Record Sent, link the provider's id and apply the reports parked for it."""
    require(principal, Permission.CREATE)
    if command.outcome != "sent" or not command.provider_message_id:
        raise InvalidCommand(
            "outcome",
            "record_sent takes a 'sent' outcome with its provider_message_id; "
            "use record_delivery_event for other outcomes.",
        )
    provider_message_id = command.provider_message_id

    def decide() -> Decision[Outcome]:
        message = get_message(ledger, principal, command.message_id)
        attempt = command.attempt or message.current_attempt
        recorded = apply_outcome(message, command, attempt)
        link = provider_message(
            Loaded(ledger),
            principal.tenant_id,
            command.provider,
            provider_key(command.provider, provider_message_id),
        )
        for report in link.link(message.id, attempt):
            apply_outcome(message, RecordDeliveryEvent(**report), attempt)
        outcome = Outcome(message.id, message.status, recorded, attempt)
        return Decision(outcome, [link, message])

    outcome = ledger.execute(decide)
    logger.info("sent recorded for message %s", outcome.message_id)
    return outcome


class Loaded:
    """The aggregates one decision loaded or created, each loaded only once.

    Several reports in one decision often concern the same message, link or
    suppression; they must all change the same in-memory aggregate.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.aggregates: dict[uuid.UUID, Aggregate] = {}

    def get(self, kind: type[A], aggregate_id: uuid.UUID) -> A | None:
        """The aggregate, loaded on first use, or None when it does not exist."""
        if aggregate_id not in self.aggregates:
            found = self.ledger.load(kind, aggregate_id)
            if found is None:
                return None
            self.aggregates[aggregate_id] = found
        aggregate = self.aggregates[aggregate_id]
        return aggregate if isinstance(aggregate, kind) else None

    def add(self, aggregate: A) -> A:
        """Remember an aggregate this decision created."""
        self.aggregates[aggregate.id] = aggregate
        return aggregate

    def changed(self) -> list[Aggregate]:
        """The aggregates with events to save."""
        return [a for a in self.aggregates.values() if a.pending_events]


def record_report(
    ledger: Ledger, tenant_id: str, report: ProviderReport
) -> ReportReceipt:
    """Record one provider report once: on its message, parked, or noted."""
    [outcome] = record_reports(ledger, tenant_id, [report])
    if isinstance(outcome, InvalidCommand):
        raise outcome
    return outcome


def record_reports(
    ledger: Ledger, tenant_id: str, reports: list[ProviderReport]
) -> list[ReportReceipt | InvalidCommand]:
    """Record reports in one transaction; a report that breaks a rule is skipped.

    Each report's answer comes back in its place: a receipt, or the error that
    kept it out. When other writers keep changing the same records, the
    reports are recorded one transaction each instead.
    """
    try:
        outcomes = ledger.execute(partial(decide_reports, ledger, tenant_id, reports))
    except InvalidTransition:
        if len(reports) == 1:
            raise
        outcomes = [
            outcome
            for report in reports
            for outcome in record_reports(ledger, tenant_id, [report])
        ]
    for report, outcome in zip(reports, outcomes, strict=True):
        state = outcome.state if isinstance(outcome, ReportReceipt) else "rejected"
        logger.info(
            "%s %s report %s: %s", report.provider, report.kind, report.key, state
        )
    return outcomes


def decide_reports(
    ledger: Ledger, tenant_id: str, reports: list[ProviderReport]
) -> Decision[list[ReportReceipt | InvalidCommand]]:
    """Decide every report against the same loaded aggregates."""
    loaded = Loaded(ledger)
    outcomes: list[ReportReceipt | InvalidCommand] = []
    for report in reports:
        try:
            outcomes.append(decide_report(loaded, tenant_id, report))
        except InvalidCommand as exc:
            outcomes.append(exc)
    return Decision(outcomes, loaded.changed())


def decide_report(
    loaded: Loaded, tenant_id: str, report: ProviderReport
) -> ReportReceipt:
    """Decide one report: message event, parked, or noted, plus any suppression.

    Every check comes before the first change, so a refused report leaves the
    loaded aggregates as they were.
    """
    link = None
    message = None
    if report.provider_message_id is not None:
        link = provider_message(
            loaded, tenant_id, report.provider, report.provider_message_id
        )
        if report.outcome is not None and link.message_id is not None:
            message = loaded.get(Message, uuid.UUID(link.message_id))
            if message is None or message.tenant_id != tenant_id:
                raise InvalidCommand(
                    "provider_message_id",
                    f"{report.provider} message {report.provider_message_id} is "
                    "linked to a message this company does not have.",
                )

    suppressed = None
    if report.suppress_because and report.recipient:
        suppress(loaded, tenant_id, report)
        suppressed = report.recipient
    if link is None:
        return ReportReceipt(report.key, "noted", None, suppressed)

    state: ReportState
    if report.outcome is None:
        new = link.note(report.key, report.kind, report.detail)
        state = "noted" if new else "duplicate"
    elif message is None:
        new = link.park(report.key, command_fields(report, ""))
        state = "parked" if new else "duplicate"
    else:
        command = RecordDeliveryEvent(**command_fields(report, str(message.id)))
        new = apply_outcome(message, command, link.attempt)
        state = "recorded" if new else "duplicate"
    return ReportReceipt(report.key, state, link.message_id, suppressed)


def suppress(loaded: Loaded, tenant_id: str, report: ProviderReport) -> None:
    """Put the report's recipient on the suppression list (again)."""
    address = report.recipient or ""
    reason = report.suppress_because or report.kind
    source = f"{report.provider}:{report.kind}"
    suppression_id = Suppression.id_for(tenant_id, report.channel, address)
    suppression = loaded.get(Suppression, suppression_id)
    if suppression is None:
        loaded.add(
            Suppression._create(
                Suppression.Added,
                id=suppression_id,
                tenant_id=tenant_id,
                channel=report.channel.value,
                address=address,
                scope=ALL,
                reason=reason,
                source=source,
                occurred_at=now(),
            )
        )
    else:
        suppression.reinstate(reason, source, now())


def provider_message(
    loaded: Loaded, tenant_id: str, provider: str, provider_message_id: str
) -> ProviderMessage:
    """The provider's id as the ledger knows it, registered on first sight."""
    link_id = ProviderMessage.id_for(tenant_id, provider, provider_message_id)
    link = loaded.get(ProviderMessage, link_id)
    if link is None:
        link = loaded.add(
            ProviderMessage._create(
                ProviderMessage.Registered,
                id=link_id,
                tenant_id=tenant_id,
                provider=provider,
                provider_message_id=provider_message_id,
            )
        )
    return link


def command_fields(report: ProviderReport, message_id: str) -> dict[str, Any]:
    """The RecordDeliveryEvent a report amounts to, as plain storable fields."""
    return {
        "message_id": message_id or "parked",
        "outcome": report.outcome,
        "provider": report.provider,
        "provider_event_id": report.key,
        "provider_message_id": report.provider_message_id,
        "occurred_at": report.occurred_at and report.occurred_at.isoformat(),
        "recipient": report.recipient,
        "machine_open": report.machine_open,
        "hard_bounce": report.hard_bounce,
        "status_code": report.status_code,
        "reason": report.reason,
        "permanent": report.permanent,
        "detail": report.detail,
    }


def apply_outcome(
    message: Message, command: RecordDeliveryEvent, attempt: int | None
) -> bool:
    """Append the command's provider event to an already loaded message."""
    fields: dict[str, object] = {
        "attempt": command.attempt or attempt,
        "occurred_at": command.occurred_at or now(),
        "provider": command.provider,
        "provider_event_id": command.provider_event_id,
        "detail": command.detail,
    }
    fields.update(outcome_fields(command))
    return message.record_provider_event(OUTCOME_EVENTS[command.outcome], **fields)


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's block of a delivery status notification (RFC 3464)."""

    recipient: str
    action: str
    status: str | None
    diagnostic: str | None

    @property
    def hard(self) -> bool:
        """Whether the status is permanent (5.x.x), so the address is suppressed."""
        return bool(self.status and self.status.startswith("5"))


@dataclass(frozen=True)
class DeliveryReport:
    """A bounce message: which of our messages it concerns and for whom it failed."""

    report_id: str
    original_message_ids: list[str]
    recipients: list[RecipientReport]
    detail: dict[str, Any] = field(default_factory=dict)


def record_delivery_report(
    ledger: Ledger, tenant_id: str, report: DeliveryReport
) -> list[ReportReceipt]:
    """Mark the original message Bounced for each recipient the report says failed.

    Returns nothing when the report names no message of this tenant.
    """
    original = None
    for header in report.original_message_ids:
        parsed = parse_message_id_header(header)
        if parsed is not None:
            message = ledger.load(Message, parsed[0])
            if message is not None and message.tenant_id == tenant_id:
                original = parsed
                break
    if original is None:
        logger.info("delivery report %s names no message of ours", report.report_id)
        return []
    message_id, attempt = original
    receipts = []
    for block in report.recipients:
        if block.action.lower() != "failed":
            continue
        receipts.append(
            ledger.execute(
                partial(
                    decide_bounce, ledger, tenant_id, report, message_id, attempt, block
                )
            )
        )
    logger.info(
        "delivery report %s: %d recipients bounced", report.report_id, len(receipts)
    )
    return receipts


def decide_bounce(
    ledger: Ledger,
    tenant_id: str,
    report: DeliveryReport,
    message_id: uuid.UUID,
    attempt: int,
    block: RecipientReport,
) -> Decision[ReportReceipt]:
    """Decide one failed recipient: Bounced, and a suppression if it is hard."""
    message = ledger.load(Message, message_id)
    if message is None:
        raise InvalidCommand("message_id", f"Message {message_id} disappeared.")
    key = f"dsn:{report.report_id}:{block.recipient.lower()}"
    command = RecordDeliveryEvent(
        message_id=str(message_id),
        outcome="bounced",
        provider="smtp",
        provider_event_id=key,
        attempt=attempt,
        recipient=block.recipient,
        hard_bounce=block.hard,
        status_code=block.status,
        reason=block.diagnostic,
        detail={**report.detail, "recipient": asdict(block)},
    )
    recorded = apply_outcome(message, command, attempt)
    aggregates: list[Recordable] = [message]
    suppressed = None
    if recorded and block.hard:
        decision = decide_suppression(
            ledger,
            tenant_id,
            Channel(message.channel),
            block.recipient.lower(),
            f"hard bounce {block.status}",
            "smtp:dsn",
        )
        aggregates.extend(decision.aggregates)
        suppressed = block.recipient.lower()
    state: ReportState = "recorded" if recorded else "duplicate"
    return Decision(ReportReceipt(key, state, str(message_id), suppressed), aggregates)


def record_pixel_open(
    ledger: Ledger, tenant_id: str, message_id: uuid.UUID, attempt: int, machine: bool
) -> ReportReceipt | None:
    """Record the first load of an attempt's tracking pixel as Opened.

    Returns None when the tenant has open tracking off or the message is not
    one of its outbound emails.
    """
    settings = settings_of(ledger, tenant_id)
    if settings is None or not settings.open_tracking:
        return None
    key = f"pixel:{message_id}:{attempt}"

    def decide() -> Decision[ReportReceipt | None]:
        message = ledger.load(Message, message_id)
        if message is None or message.tenant_id != tenant_id:
            return Decision(None)
        command = RecordDeliveryEvent(
            message_id=str(message_id),
            outcome="opened",
            provider="pixel",
            provider_event_id=key,
            attempt=attempt,
            machine_open=machine,
        )
        recorded = apply_outcome(message, command, attempt)
        state: ReportState = "recorded" if recorded else "duplicate"
        return Decision(ReportReceipt(key, state, str(message_id)), [message])

    receipt = ledger.execute(decide)
    logger.info("tracking pixel for message %s: %s", message_id, receipt)
    return receipt


TRACKED_PROVIDERS = frozenset({"sendgrid", "twilio"})
SENDGRID_RELAY_SUFFIX = re.compile(r"\.(filter|recvd)")


def provider_key(provider: str, provider_message_id: str) -> str:
    """The provider's id as sends know it.

    SendGrid's events carry `sg_message_id`: the X-Message-Id it answered the
    send with, then a suffix naming its relay (`.filter…` or `.recvd-…`).
    """
    if provider == "sendgrid":
        match = SENDGRID_RELAY_SUFFIX.search(provider_message_id)
        if match is not None:
            return provider_message_id[: match.start()]
    return provider_message_id


class SentLinker:
    """Links provider ids to messages from the Sent events in the log.

    The dispatcher records Sent in its own batches; rather than ask it to write
    links too, the linker follows the log from where it last stopped and links
    each tracked provider's id, applying any reports parked for it. It keeps
    its position in memory, so a new process starts with one pass over the
    Sent events (each already linked id costs one read).
    """

    def __init__(self, ledger: Ledger, page: int = 500) -> None:
        self.ledger = ledger
        self.page = page
        self.position = 0
        self.lock = Lock()

    def catch_up(self, pages: int | None = None) -> int:
        """Link the Sent events recorded since the last call; returns how many.

        `pages` bounds the work of one call (a webhook request must answer in
        time); what is left is linked by the next call, and reports for it are
        parked meanwhile, never lost.
        """
        linked = 0
        with self.lock:
            read = 0
            while pages is None or read < pages:
                notifications = self.ledger.recorder.select_notifications(
                    self.position + 1, self.page, topics=SENT_TOPICS
                )
                read += 1
                for notification in notifications:
                    event = self.ledger.mapper.to_domain_event(notification)
                    if isinstance(event, Message.Sent) and self.link(event):
                        linked += 1
                    self.position = notification.id
                if len(notifications) < self.page:
                    break
        return linked

    def link(self, sent: Message.Sent) -> bool:
        """Link the Sent event's provider id; returns whether it was new."""
        if sent.provider not in TRACKED_PROVIDERS or not sent.provider_message_id:
            return False
        return self.ledger.execute(partial(decide_link, self.ledger, sent))


def decide_link(ledger: Ledger, sent: Message.Sent) -> Decision[bool]:
    """Decide the link for one Sent event and apply what was parked for it."""
    link = provider_message(
        Loaded(ledger),
        sent.tenant_id,
        sent.provider,
        provider_key(sent.provider, sent.provider_message_id),
    )
    if link.linked:
        return Decision(False)
    parked = link.link(sent.originator_id, sent.attempt)
    if not parked:
        return Decision(True, [link])
    message = ledger.load(Message, sent.originator_id)
    if message is None:
        return Decision(True, [link])
    for report in parked:
        apply_outcome(message, RecordDeliveryEvent(**report), sent.attempt)
    logger.info("applied %d parked reports to message %s", len(parked), message.id)
    return Decision(True, [link, message])


def record_mail_unsubscribe(
    ledger: Ledger, tenant_id: str, message_id: uuid.UUID
) -> list[ReportReceipt]:
    """Suppress the recipients of a message whose List-Unsubscribe mailto was used.

    The caller has checked the signed token in the address; a message of
    another tenant is ignored.
    """
    message = ledger.load(Message, message_id)
    if message is None or message.tenant_id != tenant_id:
        return []
    receipts = []
    for address in message.to:
        decision = partial(
            decide_suppression,
            ledger,
            tenant_id,
            Channel(message.channel),
            address.lower(),
            "unsubscribed by email (List-Unsubscribe)",
            "list-unsubscribe",
            MARKETING if message.category == MARKETING else ALL,
        )
        ledger.execute(decision)
        key = f"list-unsubscribe:{message_id}:{address.lower()}"
        receipts.append(ReportReceipt(key, "noted", str(message_id), address.lower()))
    logger.info("list-unsubscribe by email for message %s", message_id)
    return receipts
