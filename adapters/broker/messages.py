"""What the ledger publishes on the broker, as pydantic models.

The worker builds every outgoing body from these models, and the AsyncAPI
document takes its payload schemas from them.
"""

from __future__ import annotations

from pydantic import BaseModel


class StatusChanged(BaseModel):
    """One event of a message, with the message's status right after it."""

    message_id: str
    tenant_id: str
    customer_id: str
    channel: str
    direction: str
    event: str
    status: str
    attempt: int
    reason: str | None
    idempotency_key: str | None
    sent_by: dict[str, str | None]
    occurred_at: str
    recorded_at: str
    position: int


class CommandRefused(BaseModel):
    """Why the ledger refused a command; `command_id` is the sender's Nats-Msg-Id."""

    command_id: str
    subject: str
    accepted: bool = False
    reason: str
    field: str | None


class DeadLetter(BaseModel):
    """A delivery the ledger gave up on, kept whole with the reason."""

    reason: str
    field: str | None
    subject: str
    command_id: str
    stream_sequence: int
    deliveries: int
    headers: dict[str, str]
    payload: str
