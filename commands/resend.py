"""The resend use case: send an earlier message again, as a new message.

Staff resend when a customer answered a personal inbox and should answer the
ledger instead, or when an old message has to go out once more. The new
message carries the original's subject, text, HTML, attachments, category and
CC/BCC, with `resend_of` naming the original. Its To and sender are taken
afresh, as for any send: To from the customer record as it is now, the sender
from the company's current settings. It passes every send rule again
(suppression, channel rules) through the send decision itself.
"""

from __future__ import annotations

from commands.access import require
from commands.application import Decision, Ledger
from commands.delivery import get_message
from commands.models import AttachmentUpload, SendMessage
from commands.send import SendReceipt, decide_send
from ledger.errors import InvalidTransition
from ledger.message import Message
from ledger.values import Channel, Direction, Permission, Principal


def resend_message(
    ledger: Ledger, principal: Principal, message_key: str
) -> SendReceipt:
    """Queue a new message with the original's content, linked to it."""
    require(principal, Permission.CREATE)

    def decide() -> Decision[SendReceipt]:
        original = get_message(ledger, principal, message_key)
        return decide_send(ledger, principal, resend_command(ledger, original))

    return ledger.execute(decide)


def resend_command(ledger: Ledger, original: Message) -> SendMessage:
    """The send command that repeats `original` to the customer's current address."""
    if original.direction != Direction.OUTBOUND:
        raise InvalidTransition(
            f"Message {original.id} was received from the customer; only messages "
            "the company sent can be resent."
        )
    return SendMessage(
        customer_id=original.customer_id,
        channel=Channel(original.channel),
        cc=list(original.cc),
        bcc=list(original.bcc),
        subject=original.subject,
        body=original.text,
        html=original.html,
        attachments=[
            AttachmentUpload(
                name=a["name"],
                media_type=a["media_type"],
                content=ledger.blobs.get(a["sha256"]),
            )
            for a in original.attachments
        ],
        category="marketing" if original.category == "marketing" else "transactional",
        resend_of=str(original.id),
    )
