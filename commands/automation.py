"""Automated messages: map triggers to templates, and send when a trigger arrives.

A trigger event names the customer and, when a person's action caused it, that
user; the message is attributed to them, or to System, and records the trigger.
Its idempotency key is derived from the trigger event's id, so a redelivered
event finds the message it already queued instead of queueing a second one.

StatementEmailed carries its PDF inline, base64 in the JSON payload: the
publishing service shares no blob store with the ledger, and a statement fits
well inside a broker message (NATS allows 1 MB by default, about 750 kB of
PDF). The ledger stores the bytes in its own blob store like any attachment.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field

from commands.access import require
from commands.application import Decision, Ledger
from commands.grouping import ReadRound, suppression_reads
from commands.models import (
    AttachmentUpload,
    Command,
    Identifier,
    MergeValue,
    SendMessage,
)
from commands.send import SendReceipt, decide_send
from ledger.automation import Automation, Trigger, TriggerRoute
from ledger.directory import Company, Customer
from ledger.errors import InvalidCommand, NotFound
from ledger.message import Message, idempotent_message_id
from ledger.template import Template
from ledger.values import Channel, Permission, Principal

PDF_MAGIC = b"%PDF-"


class MapTrigger(Command):
    """Send a template whenever a trigger arrives for this company."""

    trigger: Trigger
    template_id: Identifier
    channel: Channel | None = None


class UnmapTrigger(Command):
    """Stop sending anything when a trigger arrives."""

    trigger: Trigger


class StatementPdf(BaseModel):
    """The statement a StatementEmailed event carries, base64-encoded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=255)] = "statement.pdf"
    content: Base64Bytes


class TriggerEvent(Command):
    """Another service reports something that may send a customer a message."""

    event_id: Identifier
    trigger: Trigger
    customer_id: Identifier
    user_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    user_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    merge_values: dict[str, MergeValue] = Field(default_factory=dict)
    statement: StatementPdf | None = None


def map_trigger(
    ledger: Ledger, principal: Principal, command: MapTrigger
) -> TriggerRoute:
    """Route a trigger to one of the company's templates."""
    require(principal, Permission.CREATE)
    template = ledger.load(
        Template, Template.id_for(principal.tenant_id, command.template_id)
    )
    if template is None or not template.versions:
        raise NotFound("template", command.template_id)
    channel = command.channel or Channel(template.channel)
    if channel != template.channel:
        raise InvalidCommand(
            "channel",
            f"Template '{command.template_id}' is for {template.channel}, not "
            f"{channel.value}; pick a {channel.value} template or leave out "
            "the channel.",
        )

    def decide() -> Decision[TriggerRoute]:
        automation = automation_of(ledger, principal.tenant_id, create=True)
        route = automation.map(
            command.trigger, command.template_id, channel.value, principal.user_id
        )
        return Decision(route, [automation])

    return ledger.execute(decide)


def unmap_trigger(ledger: Ledger, principal: Principal, command: UnmapTrigger) -> bool:
    """Stop a trigger sending anything; returns whether it was mapped."""
    require(principal, Permission.CREATE)

    def decide() -> Decision[bool]:
        automation = automation_of(ledger, principal.tenant_id, create=True)
        return Decision(
            automation.unmap(command.trigger, principal.user_id), [automation]
        )

    return ledger.execute(decide)


def trigger_routes(ledger: Ledger, principal: Principal) -> list[TriggerRoute]:
    """The company's mapped triggers, in the order Trigger lists them."""
    require(principal, Permission.VIEW)
    automation = automation_of(ledger, principal.tenant_id, create=False)
    routes = [automation.route(trigger) for trigger in Trigger]
    return [route for route in routes if route is not None]


def automation_of(ledger: Ledger, tenant_id: str, *, create: bool) -> Automation:
    """The tenant's automation map; a new, empty one if it has none yet."""
    automation = ledger.load(Automation, Automation.id_for(tenant_id))
    if automation is not None:
        return automation
    automation = Automation._create(
        Automation.Created, id=Automation.id_for(tenant_id), tenant_id=tenant_id
    )
    if not create:
        # Nothing will be saved: a company with no map simply has no routes.
        automation.collect_events()
    return automation


def send_automated_message(
    ledger: Ledger, service: Principal, event: TriggerEvent
) -> SendReceipt:
    """Queue the message a trigger event calls for, once per event."""
    return ledger.execute(lambda: decide_automated_message(ledger, service, event))


def decide_automated_message(
    ledger: Ledger, service: Principal, event: TriggerEvent
) -> Decision[SendReceipt]:
    """The send a trigger event calls for, or the message an earlier delivery queued."""
    require(service, Permission.CREATE)
    key = trigger_idempotency_key(event)
    original = ledger.load(Message, idempotent_message_id(service.tenant_id, key))
    if original is not None:
        # A redelivery: the mapping may have changed since, the event has not.
        return Decision(SendReceipt(original.id, original.status, created=False))

    attachments = statement_attachments(event)
    automation = automation_of(ledger, service.tenant_id, create=False)
    route = automation.route(event.trigger)
    if route is None:
        raise InvalidCommand(
            "trigger",
            f"No template is mapped to {event.trigger.value} for this company; map "
            f"one with `ledger automations set {event.trigger.value} --template ID`.",
        )
    command = automated_send(event, route, key, attachments)
    return decide_send(ledger, attributed_to(service, event), command)


def trigger_idempotency_key(event: TriggerEvent) -> str:
    """One key per trigger event, so every delivery of it means the same message."""
    return f"trigger:{event.trigger.value}:{event.event_id}"


def attributed_to(service: Principal, event: TriggerEvent) -> Principal:
    """The service acting for the user whose action triggered the event, or System."""
    return Principal(
        tenant_id=service.tenant_id,
        user_id=event.user_id,
        permissions=service.permissions,
        display_name=event.user_name or event.user_id,
    )


def automated_send(
    event: TriggerEvent,
    route: TriggerRoute,
    key: str,
    attachments: list[AttachmentUpload],
) -> SendMessage:
    """The SendMessage for a trigger: its template, merge values and statement."""
    return SendMessage(
        customer_id=event.customer_id,
        channel=Channel(route.channel),
        template_id=route.template_id,
        merge_values=dict(event.merge_values),
        attachments=attachments,
        idempotency_key=key,
        trigger=f"{event.trigger.value}:{event.event_id}",
    )


def statement_attachments(event: TriggerEvent) -> list[AttachmentUpload]:
    """The statement PDF as an attachment; only StatementEmailed carries one."""
    if event.trigger != Trigger.STATEMENT_EMAILED:
        if event.statement is not None:
            raise InvalidCommand(
                "statement",
                f"Only StatementEmailed carries a statement, not "
                f"{event.trigger.value}; remove the statement.",
            )
        return []
    if event.statement is None:
        raise InvalidCommand(
            "statement",
            "A StatementEmailed event needs its PDF: put it base64-encoded in "
            "statement.content.",
        )
    if not event.statement.content.startswith(PDF_MAGIC):
        raise InvalidCommand(
            "statement",
            "statement.content is not a PDF (it does not start with %PDF-); "
            "send the statement's PDF bytes, base64-encoded.",
        )
    return [
        AttachmentUpload(
            name=event.statement.name,
            content=event.statement.content,
            media_type="application/pdf",
        )
    ]


def automated_message_reads(service: Principal, event: TriggerEvent) -> list[ReadRound]:
    """What deciding a trigger event loads, round by round, for a group commit."""
    tenant_id = service.tenant_id

    def first(_: Ledger) -> list[UUID]:
        key = trigger_idempotency_key(event)
        return [
            idempotent_message_id(tenant_id, key),
            Automation.id_for(tenant_id),
            Company.id_for(tenant_id),
            Customer.id_for(tenant_id, event.customer_id),
        ]

    def second(ledger: Ledger) -> list[UUID]:
        route = automation_of(ledger, tenant_id, create=False).route(event.trigger)
        if route is None:
            return []
        key = trigger_idempotency_key(event)
        command = automated_send(event, route, key, [])
        principal = attributed_to(service, event)
        return [
            Template.id_for(tenant_id, route.template_id),
            *suppression_reads(ledger, principal, command),
        ]

    return [first, second]
