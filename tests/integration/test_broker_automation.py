"""Trigger mappings and automated sends, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import base64

import pytest

from commands.application import Ledger
from commands.automation import (
    MapTrigger,
    TriggerEvent,
    UnmapTrigger,
    map_trigger,
    send_automated_message,
    trigger_routes,
    unmap_trigger,
)
from commands.models import SaveTemplate
from commands.templates import save_template
from ledger.automation import Automation, Trigger
from ledger.errors import InvalidCommand, NotFound, PermissionDenied
from ledger.message import Message
from ledger.values import Channel, Principal


@pytest.fixture
def reminder(ledger: Ledger, staff: Principal, company: None) -> str:
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="due-reminder",
            channel=Channel.SMS,
            body="Hi {{ customer_first_name }}, your ticket is due tomorrow.",
        ),
    )
    return "due-reminder"


def events_of(ledger: Ledger, kind: type[object]) -> int:
    topic = f"{kind.__module__}:{kind.__qualname__}"
    return len(ledger.recorder.select_notifications(None, 1000, topics=[topic]))


def test_mapping_a_trigger_takes_the_templates_channel_and_is_listed(
    ledger: Ledger, staff: Principal, viewer: Principal, reminder: str
) -> None:
    route = map_trigger(
        ledger, staff, MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder)
    )

    assert route.channel == "sms"
    assert [r.trigger for r in trigger_routes(ledger, viewer)] == ["TicketDueSoon"]


def test_mapping_a_trigger_again_unchanged_records_nothing(
    ledger: Ledger, staff: Principal, reminder: str
) -> None:
    command = MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder)

    map_trigger(ledger, staff, command)
    map_trigger(ledger, staff, command)

    assert events_of(ledger, Automation.TriggerMapped) == 1


def test_mapping_to_a_missing_template_or_the_wrong_channel_is_refused(
    ledger: Ledger, staff: Principal, viewer: Principal, reminder: str
) -> None:
    with pytest.raises(NotFound, match="No template 'nope'"):
        map_trigger(
            ledger,
            staff,
            MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id="nope"),
        )
    with pytest.raises(InvalidCommand, match="is for sms, not email"):
        map_trigger(
            ledger,
            staff,
            MapTrigger(
                trigger=Trigger.TICKET_DUE_SOON,
                template_id=reminder,
                channel=Channel.EMAIL,
            ),
        )
    with pytest.raises(PermissionDenied):
        map_trigger(
            ledger,
            viewer,
            MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder),
        )
    assert trigger_routes(ledger, staff) == []


def test_an_unmapped_trigger_sends_nothing_more(
    ledger: Ledger, staff: Principal, ada: str, reminder: str
) -> None:
    map_trigger(
        ledger, staff, MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder)
    )
    unmap_trigger(ledger, staff, UnmapTrigger(trigger=Trigger.TICKET_DUE_SOON))
    event = TriggerEvent(
        event_id="tk-1", trigger=Trigger.TICKET_DUE_SOON, customer_id=ada
    )

    with pytest.raises(InvalidCommand, match="No template is mapped to TicketDueSoon"):
        send_automated_message(ledger, staff, event)

    assert events_of(ledger, Message.Queued) == 0


def test_a_trigger_sent_again_returns_the_message_it_queued_first(
    ledger: Ledger, staff: Principal, ada: str, reminder: str
) -> None:
    map_trigger(
        ledger, staff, MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder)
    )
    event = TriggerEvent(
        event_id="tk-7", trigger=Trigger.TICKET_DUE_SOON, customer_id=ada
    )

    first = send_automated_message(ledger, staff, event)
    again = send_automated_message(ledger, staff, event)

    assert (first.created, again.created) == (True, False)
    assert again.message_id == first.message_id
    assert events_of(ledger, Message.Queued) == 1


def test_a_statement_must_be_a_pdf_and_only_statement_emailed_carries_one(
    ledger: Ledger, staff: Principal, ada: str, reminder: str
) -> None:
    not_a_pdf = {"content": base64.b64encode(b"plain text").decode()}
    pdf = {"content": base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()}

    with pytest.raises(InvalidCommand, match="is not a PDF"):
        send_automated_message(
            ledger,
            staff,
            TriggerEvent.model_validate(
                {
                    "event_id": "st-1",
                    "trigger": "StatementEmailed",
                    "customer_id": ada,
                    "statement": not_a_pdf,
                }
            ),
        )
    map_trigger(
        ledger, staff, MapTrigger(trigger=Trigger.TICKET_DUE_SOON, template_id=reminder)
    )
    with pytest.raises(InvalidCommand, match="Only StatementEmailed carries"):
        send_automated_message(
            ledger,
            staff,
            TriggerEvent.model_validate(
                {
                    "event_id": "tk-2",
                    "trigger": "TicketDueSoon",
                    "customer_id": ada,
                    "statement": pdf,
                }
            ),
        )
    assert events_of(ledger, Message.Queued) == 0
