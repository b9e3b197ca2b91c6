"""From a broker delivery to a ledger command, and from its outcome to a verdict.

A delivery is read into work (a command and the service principal it acts as)
or refused on the spot. Its outcome becomes one of three verdicts the worker
acts on: accepted (ack), refused (tell the sender, dead-letter, terminate) or
delayed (negative-ack with a delay, so the server redelivers it later).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError

from adapters.broker.messages import CommandRefused, DeadLetter
from adapters.broker.settings import BrokerSettings
from commands.automation import TriggerEvent
from commands.delivery import Outcome
from commands.grouping import CommitterClosed
from commands.models import RetryMessage, SendMessage, invalid_command, parse
from commands.send import SendReceipt
from ledger.automation import Trigger
from ledger.errors import InvalidCommand, LedgerError, StoreUnavailable
from ledger.values import Permission, Principal

MESSAGE_ID_HEADER = "Nats-Msg-Id"
COMMAND_ID_HEADER = "Ledger-Command-Id"

WorkKind = Literal["send", "retry", "trigger"]


@dataclass(frozen=True)
class Delivery:
    """One message as JetStream delivered it."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    deliveries: int
    sequence: int

    @property
    def command_id(self) -> str:
        """How the sender names this command: its Nats-Msg-Id, else the sequence."""
        return self.headers.get(MESSAGE_ID_HEADER) or f"seq:{self.sequence}"


@dataclass(frozen=True)
class Work:
    """A delivery read into a command and the principal it acts as."""

    kind: WorkKind
    principal: Principal
    command: SendMessage | RetryMessage | TriggerEvent


class Fate(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    DELAYED = "delayed"


@dataclass(frozen=True)
class Verdict:
    """What to do with a delivery, and why when it is not accepted."""

    fate: Fate
    reason: str = ""
    field_name: str | None = None


def service_principal(tenant_id: str) -> Principal:
    """The tenant's service identity: System, allowed to send and to read."""
    return Principal(tenant_id, None, frozenset(Permission), "System")


def read_delivery(settings: BrokerSettings, delivery: Delivery) -> Work:
    """The command a delivery carries; raises InvalidCommand when it carries none."""
    tokens = delivery.subject.split(".")
    tenant_id = settings.tenant_of(delivery.subject)
    data = json_object(delivery.data)
    principal = service_principal(tenant_id)
    if tokens[2:] == ["commands", "send"]:
        return Work("send", principal, keyed_send(parse(SendMessage, data), delivery))
    if tokens[2:] == ["commands", "retry"]:
        return Work(
            "retry", principal, keyed_retry(parse(RetryMessage, data), delivery)
        )
    if tokens[2] == "triggers":
        data["trigger"] = trigger_of(tokens[3], data.get("trigger"))
        return Work("trigger", principal, parse(TriggerEvent, data))
    raise InvalidCommand(
        "subject",
        f"'{delivery.subject}' names no command; publish to commands.send, "
        "commands.retry or triggers.<Trigger>.",
    )


def json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCommand(
            "payload", f"The payload is not JSON ({exc}); send the command as JSON."
        ) from exc
    if not isinstance(value, dict):
        raise InvalidCommand(
            "payload", "The payload is not a JSON object; send the command's fields."
        )
    return value


def keyed_send(command: SendMessage, delivery: Delivery) -> SendMessage:
    """The send with an idempotency key, so a redelivery cannot queue it twice."""
    if command.idempotency_key:
        return command
    header = delivery.headers.get(MESSAGE_ID_HEADER)
    if not header:
        raise InvalidCommand(
            "idempotency_key",
            "A send over the broker needs an idempotency_key or a Nats-Msg-Id "
            "header, so that a redelivery cannot send it twice; add one.",
        )
    return command.model_copy(update={"idempotency_key": f"nats:{header}"})


def keyed_retry(command: RetryMessage, delivery: Delivery) -> RetryMessage:
    """The retry under its own key, else its Nats-Msg-Id, so a redelivery of it
    is a repeat rather than a refusal (the message is no longer failed)."""
    header = delivery.headers.get(MESSAGE_ID_HEADER)
    if command.idempotency_key or not header:
        return command
    return command.model_copy(update={"idempotency_key": f"nats:{header}"})


def trigger_of(token: str, named: object) -> str:
    """The trigger the subject names; the payload may repeat it, not contradict it."""
    if token not in Trigger.__members__.values():
        choices = ", ".join(trigger.value for trigger in Trigger)
        raise InvalidCommand(
            "trigger", f"'{token}' is not a trigger; publish to one of: {choices}."
        )
    if named is not None and named != token:
        raise InvalidCommand(
            "trigger",
            f"The payload names trigger '{named}' but the subject names '{token}'; "
            "make them agree or leave the trigger out of the payload.",
        )
    return token


def verdict_of(outcome: object) -> Verdict:
    """The verdict for what a command returned or raised."""
    if isinstance(outcome, SendReceipt | Outcome):
        return Verdict(Fate.ACCEPTED)
    if isinstance(outcome, StoreUnavailable | CommitterClosed | PersistenceError):
        return Verdict(Fate.DELAYED, str(outcome))
    if isinstance(outcome, TimeoutError | ConnectionError):
        return Verdict(Fate.DELAYED, f"{type(outcome).__name__}: {outcome}")
    if isinstance(outcome, LedgerError):
        return Verdict(Fate.REFUSED, outcome.message, getattr(outcome, "field", None))
    if isinstance(outcome, ValidationError):
        refusal = invalid_command(outcome)
        return Verdict(Fate.REFUSED, refusal.message, refusal.field)
    # Anything else is a fault of ours, not of the command: try again later,
    # and dead-letter it once the deliveries run out.
    return Verdict(Fate.DELAYED, f"unexpected {type(outcome).__name__}: {outcome}")


def dead_letter(delivery: Delivery, verdict: Verdict) -> DeadLetter:
    """What the dead-letter subject receives: the reason and the delivery whole."""
    return DeadLetter(
        reason=verdict.reason,
        field=verdict.field_name,
        subject=delivery.subject,
        command_id=delivery.command_id,
        stream_sequence=delivery.sequence,
        deliveries=delivery.deliveries,
        headers=dict(delivery.headers),
        payload=delivery.data.decode("utf-8", errors="replace"),
    )


def refusal(delivery: Delivery, verdict: Verdict) -> CommandRefused:
    """What the sender hears on the results subject when a command is refused."""
    return CommandRefused(
        command_id=delivery.command_id,
        subject=delivery.subject,
        reason=verdict.reason,
        field=verdict.field_name,
    )
