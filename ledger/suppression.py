"""The suppression list: addresses a tenant must not message on a channel."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

SUPPRESSION_NAMESPACE = uuid.UUID("9e2d7c61-0a4f-4b1e-bb0e-3c6c1d2f8a77")

OPT_OUT_CONFIRMATION = "sms-opt-out-confirmation"
HELP_ANSWER = "sms-help"
# Carrier rules expect one confirmation of an opt-out and an answer to HELP even
# though the number is now suppressed; nothing else may reach it.
EXEMPT_TRIGGERS = frozenset({OPT_OUT_CONFIRMATION, HELP_ANSWER})


def exempt_from_suppression(trigger: str | None) -> bool:
    """Whether a message sent for `trigger` may reach a suppressed recipient."""
    return trigger in EXEMPT_TRIGGERS


# What a suppression stops: every message on its channel, or only marketing.
# An unsubscribe from a marketing email stops marketing alone, so receipts and
# appointment confirmations still arrive; bounces, spam reports, STOP and
# staff stop everything.
ALL = "all"
MARKETING = "marketing"
SCOPES = (ALL, MARKETING)


def scopes_stopping(category: str) -> tuple[str, ...]:
    """The suppression scopes that stop a message of this category."""
    return SCOPES if category == MARKETING else (ALL,)


class Suppression(Aggregate):
    """One address on one channel of one tenant, in one scope; added, lifted,
    added again."""

    if TYPE_CHECKING:
        tenant_id: str
        channel: str
        address: str
        scope: str
        reason: str
        active: bool

    @staticmethod
    @lru_cache(maxsize=65536)
    def id_for(
        tenant_id: str, channel: str, address: str, scope: str = ALL
    ) -> uuid.UUID:
        key = f"{tenant_id}\x1f{channel}\x1f{address.lower()}"
        if scope != ALL:
            key += f"\x1f{scope}"
        return uuid.uuid5(SUPPRESSION_NAMESPACE, key)

    class Added(Aggregate.Created):
        class_version = 2
        tenant_id: str
        channel: str
        address: str
        scope: str
        reason: str
        source: str
        occurred_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            """Suppressions recorded before scopes stopped everything."""
            state["scope"] = ALL

        def apply(self, suppression: Suppression) -> None:
            suppression.tenant_id = self.tenant_id
            suppression.channel = self.channel
            suppression.address = self.address
            suppression.scope = self.scope
            suppression.activate(self.reason)

    class Reinstated(Aggregate.Event):
        class_version = 1
        reason: str
        source: str
        occurred_at: datetime

        def apply(self, suppression: Suppression) -> None:
            suppression.activate(self.reason)

    class Lifted(Aggregate.Event):
        class_version = 1
        reason: str
        source: str
        occurred_at: datetime

        def apply(self, suppression: Suppression) -> None:
            suppression.active = False

    def activate(self, reason: str) -> None:
        self.active = True
        self.reason = reason

    def reinstate(self, reason: str, source: str, occurred_at: datetime) -> None:
        if not self.active:
            self.trigger_event(
                self.Reinstated, reason=reason, source=source, occurred_at=occurred_at
            )

    def lift(self, reason: str, source: str, occurred_at: datetime) -> None:
        if self.active:
            self.trigger_event(
                self.Lifted, reason=reason, source=source, occurred_at=occurred_at
            )
