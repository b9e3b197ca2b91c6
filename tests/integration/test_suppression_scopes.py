"""Suppressions stop everything on a channel, or marketing only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from commands.application import Ledger
from commands.delivery import get_message
from commands.models import SendMessage, Suppress, Unsuppress
from commands.send import send_message
from commands.suppressions import suppress, unsuppress
from ledger.errors import NotFound, RecipientSuppressed
from ledger.suppression import ALL, MARKETING, Suppression
from ledger.values import Channel, Principal, Status
from tests.integration.test_dispatch import dispatcher_for

ADA_EMAIL = "ada.fernsby@example.com"


def email(ada: str, category: str) -> SendMessage:
    return SendMessage(
        customer_id=ada,
        channel=Channel.EMAIL,
        category=category,
        subject="Spring offer" if category == "marketing" else "Your receipt",
        body="Hello.",
    )


def stop_marketing(ledger: Ledger, staff: Principal, reason: str) -> None:
    suppress(
        ledger,
        staff,
        Suppress(
            channel=Channel.EMAIL, address=ADA_EMAIL, reason=reason, scope=MARKETING
        ),
    )


def test_a_marketing_suppression_stops_marketing_and_lets_transactional_through(
    ledger: Ledger, staff: Principal, ada: str
):
    stop_marketing(ledger, staff, "asked for no offers")

    with pytest.raises(RecipientSuppressed):
        send_message(ledger, staff, email(ada, "marketing"))
    assert send_message(ledger, staff, email(ada, "transactional")).created


def test_a_suppression_of_everything_stops_both_categories(
    ledger: Ledger, staff: Principal, ada: str
):
    suppress(
        ledger,
        staff,
        Suppress(channel=Channel.EMAIL, address=ADA_EMAIL, reason="hard bounce"),
    )

    for category in ("marketing", "transactional"):
        with pytest.raises(RecipientSuppressed):
            send_message(ledger, staff, email(ada, category))


def test_lifting_names_the_scope_that_was_stopped(
    ledger: Ledger, staff: Principal, ada: str
):
    stop_marketing(ledger, staff, "offers")

    with pytest.raises(NotFound, match=r"\(all\)"):
        unsuppress(
            ledger,
            staff,
            Unsuppress(channel=Channel.EMAIL, address=ADA_EMAIL, reason="oops"),
        )
    unsuppress(
        ledger,
        staff,
        Unsuppress(
            channel=Channel.EMAIL,
            address=ADA_EMAIL,
            reason="wants offers again",
            scope=MARKETING,
        ),
    )
    assert send_message(ledger, staff, email(ada, "marketing")).created


def test_a_suppression_recorded_before_scopes_stops_everything(
    ledger: Ledger, staff: Principal, ada: str
):
    """Its Added event (version 1) has no scope: it is read as `all`."""
    suppression_id = Suppression.id_for("brightside", Channel.EMAIL, ADA_EMAIL)
    state = ledger.mapper.transcoder.encode(
        {
            "timestamp": datetime.now(UTC),
            "originator_topic": get_topic(Suppression),
            "tenant_id": "brightside",
            "channel": "email",
            "address": ADA_EMAIL,
            "reason": "spam report",
            "source": "sendgrid:spamreport",
            "occurred_at": datetime.now(UTC),
        }
    )
    ledger.recorder.insert_events(
        [StoredEvent(suppression_id, 1, get_topic(Suppression.Added), state)]
    )

    suppression = ledger.load(Suppression, suppression_id)

    assert suppression is not None and suppression.scope == ALL
    assert suppression.active
    with pytest.raises(RecipientSuppressed):
        send_message(ledger, staff, email(ada, "transactional"))


def test_the_dispatcher_holds_back_marketing_queued_before_a_marketing_unsubscribe(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
):
    offer = send_message(ledger, staff, email(ada, "marketing"))
    receipt = send_message(ledger, staff, email(ada, "transactional"))
    stop_marketing(ledger, staff, "unsubscribed from offers")

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    held = get_message(ledger, staff, str(offer.message_id))
    sent = get_message(ledger, staff, str(receipt.message_id))
    assert held.status == Status.FAILED
    assert sent.status == Status.SENT
