"""SendGrid's Event Webhook: signed batches land on the right message once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from commands.application import Ledger
from commands.delivery import get_message
from commands.models import RecordDeliveryEvent
from commands.tracking import SentLinker
from commands.tracking import record_sent as record_sent_and_link
from ledger.message import Message
from ledger.provider_events import ProviderMessage
from ledger.suppression import Suppression
from ledger.values import Channel, Principal, Status
from tests.integration.tracking_support import (
    SendGridSigner,
    client_for,
    configure,
    queue_email,
    record_sent,
    sendgrid_events,
    sqlite_only,
    store_position,
)

URL = "/webhooks/brightside/sendgrid/events"
SG_ID = "Qm7pXk2vT0eLh9sYw3RzAg"


@pytest.fixture
def signer(ledger: Ledger, staff: Principal, company: None) -> SendGridSigner:
    signer = SendGridSigner()
    configure(ledger, staff, signer)
    return signer


def post(ledger: Ledger, signer: SendGridSigner, events: object, **options: object):
    body = json.dumps(events).encode()
    return client_for(ledger, **options).post(
        URL, content=body, headers=signer.headers(body)
    )


def test_documented_events_move_the_message_to_opened_with_a_machine_open(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)

    response = post(ledger, signer, sendgrid_events("events.json", message_id))

    assert response.status_code == 200
    states = [receipt["state"] for receipt in response.json()["accepted"]]
    assert states == ["noted", "recorded", "recorded", "recorded"]
    message = get_message(ledger, staff, str(message_id))
    assert message.status == Status.OPENED
    opens = [e for e in ledger.events.get(message_id) if isinstance(e, Message.Opened)]
    assert [o.machine for o in opens] == [True, False]
    assert opens[0].detail["sg_event_id"] == "b3Blbi1tYWNoaW5lLTE3NjQ3NTYxMzEtMDAz"


@sqlite_only
def test_a_bad_signature_is_refused_with_401_and_records_nothing(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)
    body = json.dumps(sendgrid_events("events.json", message_id)).encode()
    forged = SendGridSigner().headers(body)
    before = store_position(ledger)

    response = client_for(ledger).post(URL, content=body, headers=forged)

    assert response.status_code == 401
    assert store_position(ledger) == before


@sqlite_only
def test_a_body_changed_after_signing_is_refused(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    body = json.dumps(sendgrid_events("events.json", message_id)).encode()
    headers = signer.headers(body)
    before = store_position(ledger)

    response = client_for(ledger).post(
        URL, content=body.replace(b"delivered", b"bounce"), headers=headers
    )

    assert response.status_code == 401
    assert store_position(ledger) == before


@sqlite_only
def test_a_timestamp_outside_the_allowed_skew_is_refused(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    body = json.dumps(sendgrid_events("events.json", message_id)).encode()
    headers = signer.headers(body, timestamp=int(time.time()) - 3600)
    before = store_position(ledger)

    response = client_for(ledger).post(URL, content=body, headers=headers)

    assert response.status_code == 401
    assert store_position(ledger) == before


@sqlite_only
def test_an_unknown_company_is_refused_like_a_bad_signature(
    ledger: Ledger, signer: SendGridSigner
) -> None:
    body = b"[]"

    response = client_for(ledger).post(
        "/webhooks/rival-clinic/sendgrid/events",
        content=body,
        headers=signer.headers(body),
    )

    assert response.status_code == 401


@sqlite_only
@pytest.mark.parametrize("body", [b"{not json", b'{"event": "delivered"}', b"\xff"])
def test_a_malformed_body_is_refused_with_400_and_records_nothing(
    ledger: Ledger, signer: SendGridSigner, body: bytes
) -> None:
    before = store_position(ledger)

    response = client_for(ledger).post(URL, content=body, headers=signer.headers(body))

    assert response.status_code == 400
    assert store_position(ledger) == before


def test_a_batch_with_one_bad_event_records_the_rest_and_reports_that_one(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)
    events = sendgrid_events("events.json", message_id)
    del events[1]["sg_event_id"]

    response = post(ledger, signer, events)

    assert response.status_code == 200
    answer = response.json()
    assert [r["index"] for r in answer["rejected"]] == [1]
    assert "sg_event_id" in answer["rejected"][0]["error"]
    assert len(answer["accepted"]) == 3
    assert get_message(ledger, staff, str(message_id)).status == Status.OPENED


def test_a_redelivered_batch_appends_nothing(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)
    events = sendgrid_events("events.json", message_id)
    post(ledger, signer, events)
    before = store_position(ledger)

    response = post(ledger, signer, events)

    states = {receipt["state"] for receipt in response.json()["accepted"]}
    assert states == {"duplicate"}
    assert store_position(ledger) == before


def test_events_before_the_send_is_recorded_are_parked_then_applied(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    early = post(ledger, signer, sendgrid_events("events.json", message_id))
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)

    post(ledger, signer, [])

    assert [r["state"] for r in early.json()["accepted"]][1:] == ["parked"] * 3
    assert get_message(ledger, staff, str(message_id)).status == Status.OPENED


def test_recording_sent_through_tracking_applies_parked_events_at_once(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)
    post(ledger, signer, sendgrid_events("events.json", message_id))

    outcome = record_sent_and_link(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(message_id),
            outcome="sent",
            provider="sendgrid",
            provider_message_id=SG_ID,
        ),
    )

    assert outcome.status == Status.OPENED
    link = ledger.load(
        ProviderMessage, ProviderMessage.id_for("brightside", "sendgrid", SG_ID)
    )
    assert link is not None and link.message_id == str(message_id)


def test_hard_bounces_spam_reports_and_unsubscribes_suppress_but_soft_bounces_do_not(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    message_id = queue_email(ledger, staff, ada)

    response = post(
        ledger, signer, sendgrid_events("bounce_and_consent.json", message_id)
    )

    suppressed = {r["suppressed"] for r in response.json()["accepted"]} - {None}
    assert suppressed == {
        "old.address@example.net",
        "ada.fernsby@example.com",
        "farid.h@example.org",
    }
    for address in suppressed:
        suppression = ledger.load(
            Suppression, Suppression.id_for("brightside", Channel.EMAIL, address)
        )
        assert suppression is not None and suppression.active
    soft = ledger.load(
        Suppression,
        Suppression.id_for("brightside", Channel.EMAIL, "busy.inbox@example.org"),
    )
    assert soft is None


def test_the_provider_links_worker_applies_parked_events_without_a_new_webhook(
    ledger: Ledger,
    ledger_url: str,
    staff: Principal,
    ada: str,
    signer: SendGridSigner,
    tmp_path: Path,
) -> None:
    message_id = queue_email(ledger, staff, ada)
    post(ledger, signer, sendgrid_events("events.json", message_id))
    record_sent(ledger, staff, message_id, "sendgrid", SG_ID)
    env = {"LEDGER_DATABASE_URL": ledger_url, "LEDGER_BLOB_DIR": str(tmp_path)}

    result = CliRunner().invoke(app, ["worker", "provider-links", "--once"], env=env)

    assert result.exit_code == 0, result.output
    assert "Linked 1" in result.output
    assert get_message(ledger, staff, str(message_id)).status == Status.OPENED


def test_a_bounded_catch_up_leaves_the_rest_for_the_next_call(
    ledger: Ledger, staff: Principal, ada: str, signer: SendGridSigner
) -> None:
    for number in range(3):
        message_id = queue_email(ledger, staff, ada)
        record_sent(ledger, staff, message_id, "sendgrid", f"sg-bound-{number}")
    linker = SentLinker(ledger, page=1)

    first = linker.catch_up(pages=2)
    rest = linker.catch_up()

    assert (first, rest) == (2, 1)
