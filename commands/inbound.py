"""Recording what customers send us, threaded under what they answer."""

from __future__ import annotations

import uuid
from typing import Any

from commands.access import require
from commands.application import Decision, Ledger
from commands.delivery import get_message
from commands.models import RecordInbound
from commands.ports import now
from ledger.directory import Customer
from ledger.errors import InvalidCommand
from ledger.message import Message
from ledger.values import Attribution, Direction, Permission, Principal


def record_inbound(
    ledger: Ledger, principal: Principal, command: RecordInbound
) -> uuid.UUID:
    """Record an inbound message; the message it answers gains ReplyReceived."""
    require(principal, Permission.CREATE)
    return ledger.execute(lambda: decide_inbound(ledger, principal, command))


INBOUND_NAMESPACE = uuid.UUID("5d0b8e3a-2c6f-4a19-8f7e-6b3d9a1c4e52")


def inbound_message_id(tenant_id: str, inbound_key: str) -> uuid.UUID:
    """The id an inbound message with this key gets, so a redelivery finds it."""
    return uuid.uuid5(INBOUND_NAMESPACE, f"{tenant_id}\x1f{inbound_key}")


def decide_inbound(
    ledger: Ledger, principal: Principal, command: RecordInbound
) -> Decision[uuid.UUID]:
    reply_id = uuid.uuid4()
    if command.inbound_key:
        reply_id = inbound_message_id(principal.tenant_id, command.inbound_key)
        if ledger.load(Message, reply_id) is not None:
            return Decision(reply_id)
    ledger.load_in_tenant(
        Customer,
        Customer.id_for(principal.tenant_id, command.customer_id),
        principal.tenant_id,
        "customer",
        command.customer_id,
    )
    answered = None
    if command.in_reply_to:
        answered = get_message(ledger, principal, command.in_reply_to)
        if answered.customer_id != command.customer_id or (
            answered.direction != Direction.OUTBOUND
        ):
            raise InvalidCommand(
                "in_reply_to",
                f"Message {command.in_reply_to} is not an outbound message to "
                f"customer '{command.customer_id}'; thread the reply elsewhere.",
            )

    occurred_at = command.occurred_at or now()
    fields: dict[str, Any] = command.model_dump(
        include={"channel", "sender", "to", "subject", "html", "auto_reply"}
    )
    reply = Message._create(
        Message.Received,
        id=reply_id,
        tenant_id=principal.tenant_id,
        customer_id=command.customer_id,
        occurred_at=occurred_at,
        cc=command.cc,
        text=command.body,
        attachments=command.attachments,
        provider=command.provider,
        provider_message_id=command.provider_message_id,
        in_reply_to=answered and str(answered.id),
        headers=command.headers,
        sent_by=Attribution(principal.user_id).as_dict(),
        **fields,
    )
    if answered is None or command.auto_reply:
        # An auto-reply keeps its in_reply_to link but is no answer: counting it
        # would mark an out-of-office as the customer replying.
        return Decision(reply.id, [reply])
    answered.add_reply(reply, occurred_at)
    return Decision(reply.id, [reply, answered])
