"""Where the broker worker listens and publishes, read from the environment.

Every subject starts with a root (`ledger` unless LEDGER_BROKER_ROOT says
otherwise) and the tenant, so NATS permissions can confine each tenant's
service credentials to `<root>.<tenant>.>`:

    <root>.<tenant>.commands.send        SendMessage in
    <root>.<tenant>.commands.retry       RetryMessage in
    <root>.<tenant>.triggers.<Trigger>   trigger events in
    <root>.<tenant>.status.<event>       message status changes out
    <root>.<tenant>.results              why a command was refused
    <root>.<tenant>.deadletter           deliveries the ledger gave up on
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ledger.errors import LedgerError

TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class BadBrokerSetting(LedgerError):
    """Raised when a LEDGER_BROKER_* or LEDGER_NATS_URL setting is unusable."""


@dataclass(frozen=True)
class BrokerSettings:
    """The NATS server, subject root, stream names and delivery policy."""

    servers: str = "nats://127.0.0.1:4222"
    root: str = "ledger"
    stream_prefix: str = "LEDGER"
    consumer: Literal["pull", "push"] = "pull"
    batch_size: int = 256
    pullers: int = 3
    max_in_flight: int = 8192
    pull_wait: float = 0.5
    duplicate_window: float = 120.0
    max_deliveries: int = 5
    retry_delays: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)
    ack_wait: float = 60.0
    status_batch: int = 500
    status_poll: float = 0.2

    def __post_init__(self) -> None:
        for name in ("root", "stream_prefix"):
            value = getattr(self, name)
            if not TOKEN.match(value):
                raise BadBrokerSetting(
                    f"The broker {name} '{value}' must be letters, digits, '-' or "
                    "'_' (it becomes part of NATS subjects and stream names)."
                )
        if self.max_deliveries < 1 or self.batch_size < 1 or self.pullers < 1:
            raise BadBrokerSetting(
                "max_deliveries, batch_size and pullers must be 1 or more; raise them."
            )
        if self.max_in_flight < self.batch_size:
            raise BadBrokerSetting(
                f"max_in_flight ({self.max_in_flight}) is below batch_size "
                f"({self.batch_size}), so no whole batch could be handed out; "
                "raise LEDGER_BROKER_MAX_IN_FLIGHT."
            )
        consumer_kind(self.consumer)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerSettings:
        env = os.environ if env is None else env
        return cls(
            servers=env.get("LEDGER_NATS_URL", cls.servers),
            root=env.get("LEDGER_BROKER_ROOT", cls.root),
            stream_prefix=env.get("LEDGER_BROKER_STREAM", cls.stream_prefix),
            consumer=consumer_kind(env.get("LEDGER_BROKER_CONSUMER", "pull")),
            batch_size=whole(env, "LEDGER_BROKER_BATCH", cls.batch_size),
            pullers=whole(env, "LEDGER_BROKER_PULLERS", cls.pullers),
            max_in_flight=whole(env, "LEDGER_BROKER_MAX_IN_FLIGHT", cls.max_in_flight),
            max_deliveries=whole(
                env, "LEDGER_BROKER_MAX_DELIVERIES", cls.max_deliveries
            ),
        )

    @property
    def intake_stream(self) -> str:
        return f"{self.stream_prefix}_IN"

    @property
    def outbox_stream(self) -> str:
        return f"{self.stream_prefix}_OUT"

    @property
    def intake_subjects(self) -> list[str]:
        return [f"{self.root}.*.commands.*", f"{self.root}.*.triggers.*"]

    @property
    def outbox_subjects(self) -> list[str]:
        return [
            f"{self.root}.*.status.*",
            f"{self.root}.*.results",
            f"{self.root}.*.deadletter",
        ]

    def subject(self, tenant_id: str, *parts: str) -> str:
        return ".".join((self.root, tenant_id, *parts))

    def tenant_of(self, subject: str) -> str:
        """The tenant token of an intake subject."""
        return subject.split(".")[1]

    def retry_delay(self, deliveries: int) -> float:
        """How long to wait before delivery number `deliveries + 1`."""
        index = min(max(deliveries, 1), len(self.retry_delays)) - 1
        return self.retry_delays[index]


def consumer_kind(value: str) -> Literal["pull", "push"]:
    if value == "pull":
        return "pull"
    if value == "push":
        return "push"
    raise BadBrokerSetting(
        f"The broker consumer '{value}' is neither pull nor push; pick one of those."
    )


def whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BadBrokerSetting(f"{name} is '{raw}'; set it to a whole number above 0.")
    return int(raw)


def is_subject_token(value: str) -> bool:
    """Whether `value` can stand as one token of a NATS subject."""
    return bool(TOKEN.match(value))
