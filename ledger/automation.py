"""Automated messages: which template a tenant sends when another service reports.

Other services (scheduling, ticketing, billing, workflows) publish trigger events;
each tenant has one Automation aggregate that maps a trigger to the template and
channel to send. Unmapped triggers send nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

AUTOMATION_NAMESPACE = uuid.UUID("2f6b9c1e-8d4a-4e73-a5b0-7c3e1f9d2a64")


class Trigger(StrEnum):
    """Events of other services that can send a customer a message."""

    APPOINTMENT_SCHEDULED = "AppointmentScheduled"
    APPOINTMENT_CHANGED = "AppointmentChanged"
    TICKET_DUE_SOON = "TicketDueSoon"
    PAYMENT_RECORDED = "PaymentRecorded"
    STATEMENT_EMAILED = "StatementEmailed"
    WORKFLOW_STEP_REACHED = "WorkflowStepReached"


@dataclass(frozen=True)
class TriggerRoute:
    """The template and channel one trigger sends."""

    trigger: str
    template_id: str
    channel: str


class Automation(Aggregate):
    """A tenant's map from trigger to template; each change is on record."""

    if TYPE_CHECKING:
        tenant_id: str
        routes: dict[str, TriggerRoute]

    @staticmethod
    def id_for(tenant_id: str) -> uuid.UUID:
        return uuid.uuid5(AUTOMATION_NAMESPACE, f"automation\x1f{tenant_id}")

    class Created(Aggregate.Created):
        """The tenant configured its first automated message."""

        class_version = 1
        tenant_id: str

        def apply(self, automation: Automation) -> None:
            automation.tenant_id = self.tenant_id
            automation.routes = {}

    class TriggerMapped(Aggregate.Event):
        """A trigger now sends this template on this channel."""

        class_version = 1
        trigger: str
        template_id: str
        channel: str
        mapped_by: str | None

        def apply(self, automation: Automation) -> None:
            automation.routes[self.trigger] = TriggerRoute(
                self.trigger, self.template_id, self.channel
            )

    class TriggerUnmapped(Aggregate.Event):
        """A trigger no longer sends anything."""

        class_version = 1
        trigger: str
        unmapped_by: str | None

        def apply(self, automation: Automation) -> None:
            automation.routes.pop(self.trigger, None)

    def map(
        self, trigger: Trigger, template_id: str, channel: str, by: str | None
    ) -> TriggerRoute:
        """Route `trigger` to a template; an unchanged mapping records nothing."""
        route = TriggerRoute(trigger.value, template_id, channel)
        if self.routes.get(trigger.value) != route:
            self.trigger_event(
                self.TriggerMapped,
                trigger=trigger.value,
                template_id=template_id,
                channel=channel,
                mapped_by=by,
            )
        return route

    def unmap(self, trigger: Trigger, by: str | None) -> bool:
        """Stop `trigger` sending anything; returns whether it was mapped."""
        if trigger.value not in self.routes:
            return False
        self.trigger_event(self.TriggerUnmapped, trigger=trigger.value, unmapped_by=by)
        return True

    def route(self, trigger: Trigger) -> TriggerRoute | None:
        """What `trigger` sends for this tenant, if anything."""
        return self.routes.get(trigger.value)
