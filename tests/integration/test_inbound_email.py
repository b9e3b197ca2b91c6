"""Inbound email: threaded in the issue's order, bounces and forwards understood."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.inbound_mail import accept_email, import_email
from adapters.webhooks import import_router
from commands.application import Ledger
from commands.delivery import get_message
from commands.models import SendMessage
from commands.send import send_message
from commands.threading import InboundReceipt, file_unmatched, unmatched_inbound
from commands.tracking import ReportReceipt
from ledger.errors import InvalidCommand, InvalidTransition, NotFound
from ledger.mail_identity import reply_address
from ledger.message import Message
from ledger.suppression import ALL, MARKETING, Suppression
from ledger.values import Channel, Principal, Status
from tests.integration.tracking_support import (
    INBOUND_TOKEN,
    REPLY_SECRET,
    SendGridSigner,
    client_for,
    configure,
    mail_fixture,
    queue_email,
    sqlite_only,
    store_position,
)


def receive(ledger: Ledger, raw: bytes, **options: object) -> InboundReceipt:
    result = accept_email(
        ledger, "brightside", raw, reply_secret=REPLY_SECRET, **options
    )
    assert isinstance(result, InboundReceipt)
    return result


def test_a_gmail_reply_is_threaded_by_in_reply_to_without_its_quoted_history(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)

    receipt = receive(ledger, mail_fixture("gmail_reply.eml", message_id=str(sent)))

    assert (receipt.customer_id, receipt.answers) == (ada, sent)
    assert receipt.matched_by == "message-id"
    original = get_message(ledger, staff, str(sent))
    assert original.replies == [str(receipt.message_id)]
    reply = get_message(ledger, staff, str(receipt.message_id))
    assert reply.status == Status.RECEIVED
    assert reply.preview == (
        "Thanks! Tuesday at 3pm works for me. Could you send the address of "
        "the new office?"
    )
    assert reply.html is not None and "<script" not in reply.html


def test_a_signed_reply_address_threads_even_when_the_message_id_was_rewritten(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada, subject="Parking at the new office")
    queue_email(ledger, staff, ada)
    address = reply_address(sent, "brightside.example", REPLY_SECRET)

    receipt = receive(ledger, mail_fixture("apple_mail_reply.eml", reply_to=address))

    assert (receipt.answers, receipt.matched_by) == (sent, "reply-address")


@sqlite_only
def test_a_forged_reply_address_is_not_trusted(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada, subject="Parking at the new office")
    latest = queue_email(ledger, staff, ada)
    forged = reply_address(sent, "brightside.example", b"someone else's secret")

    receipt = receive(ledger, mail_fixture("apple_mail_reply.eml", reply_to=forged))

    assert (receipt.answers, receipt.matched_by) == (latest, "sender-and-subject")


def test_without_references_a_reply_is_threaded_by_sender_and_subject(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    queue_email(ledger, staff, ada, subject="Your invoice")
    sent = queue_email(ledger, staff, ada)

    receipt = receive(ledger, mail_fixture("outlook_reply.eml"))

    assert (receipt.answers, receipt.matched_by) == (sent, "sender-and-subject")
    reply = get_message(ledger, staff, str(receipt.message_id))
    assert [a["name"] for a in reply.attachments] == ["insurance-form.pdf"]
    assert ledger.blobs.get(reply.attachments[0]["sha256"]).startswith(b"%PDF")


def test_a_known_sender_on_a_new_subject_is_logged_under_the_customer(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    queue_email(ledger, staff, ada, subject="Your invoice")

    receipt = receive(ledger, mail_fixture("outlook_reply.eml"))

    assert (receipt.customer_id, receipt.answers) == (ada, None)
    assert receipt.matched_by == "sender"


def test_an_unknown_sender_goes_to_the_unmatched_list(
    ledger: Ledger, staff: Principal, outsider: Principal, ada: str
) -> None:
    receipt = receive(ledger, mail_fixture("unknown_sender.eml"))

    assert receipt.unmatched
    [kept] = unmatched_inbound(ledger, staff)
    assert (kept.sender, kept.subject) == (
        "sam.visitor@example.org",
        "Do you take new patients?",
    )
    assert unmatched_inbound(ledger, outsider) == []


def test_an_auto_reply_is_recorded_and_linked_but_not_counted_as_a_reply(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)

    receipt = receive(
        ledger, mail_fixture("exchange_auto_reply.eml", message_id=str(sent))
    )

    reply = get_message(ledger, staff, str(receipt.message_id))
    assert reply.auto_reply
    assert reply.in_reply_to == str(sent)
    assert not get_message(ledger, staff, str(sent)).replied


def test_the_same_email_delivered_twice_is_recorded_once(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    raw = mail_fixture("gmail_reply.eml", message_id=str(sent))
    first = receive(ledger, raw)
    before = store_position(ledger)

    again = receive(ledger, raw)

    assert again.message_id == first.message_id
    assert store_position(ledger) == before
    assert len(get_message(ledger, staff, str(sent)).replies) == 1


@pytest.mark.parametrize(
    ("name", "recipient", "hard"),
    [
        ("postfix_bounce.eml", "old.address@example.net", True),
        ("exim_bounce.eml", "busy.inbox@example.org", True),
        ("gmail_bounce.eml", "nobody.here@example.com", True),
        ("exchange_bounce.eml", "j.doe@contoso.example", True),
    ],
)
def test_a_bounce_marks_the_original_bounced_and_is_not_a_reply(
    ledger: Ledger, staff: Principal, ada: str, name: str, recipient: str, hard: bool
) -> None:
    sent = queue_email(ledger, staff, ada, to=recipient)

    result = accept_email(
        ledger, "brightside", mail_fixture(name, message_id=str(sent))
    )

    assert isinstance(result, list)
    assert [r.state for r in result] == ["recorded"]
    original = get_message(ledger, staff, str(sent))
    assert original.status == Status.BOUNCED
    assert original.replies == []
    [bounce] = [e for e in ledger.events.get(sent) if isinstance(e, Message.Bounced)]
    assert (bounce.recipient, bounce.hard) == (recipient, hard)
    assert bounce.status_code and bounce.status_code.startswith("5.")
    assert bounce.diagnostic
    suppression = ledger.load(
        Suppression, Suppression.id_for("brightside", Channel.EMAIL, recipient)
    )
    assert suppression is not None and suppression.active


def test_a_bounce_for_another_companys_message_changes_nothing(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada, to="old.address@example.net")
    raw = mail_fixture("postfix_bounce.eml", message_id=str(sent))

    result = accept_email(ledger, "rival-clinic", raw)

    assert result == []
    assert get_message(ledger, staff, str(sent)).status == Status.QUEUED


@pytest.mark.parametrize("name", ["forward_attached.eml", "forward_inline.eml"])
def test_a_forward_to_the_import_address_records_the_original_for_the_teammate(
    ledger: Ledger, staff: Principal, ada: str, name: str
) -> None:
    sent = queue_email(ledger, staff, ada)

    receipt = receive(
        ledger,
        mail_fixture(name, message_id=str(sent)),
        forwarded_by="maria.lopez@brightside.example",
    )

    assert receipt.answers == sent
    reply = get_message(ledger, staff, str(receipt.message_id))
    assert reply.sender == "ada.fernsby@example.com"
    assert reply.sent_by["user_id"] == "maria.lopez@brightside.example"
    assert "filing" not in reply.text.lower()


def test_an_imported_email_is_attributed_to_the_importer_and_its_customer(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)

    receipt = import_email(
        ledger, staff, mail_fixture("outlook_reply.eml"), ada, REPLY_SECRET
    )

    assert (receipt.customer_id, receipt.answers) == (ada, sent)
    reply = get_message(ledger, staff, str(receipt.message_id))
    assert reply.sent_by["user_id"] == "maria.lopez"


def test_importing_needs_a_customer_of_ones_own_company(
    ledger: Ledger, outsider: Principal, ada: str
) -> None:
    before = store_position(ledger)

    with pytest.raises(NotFound):
        import_email(ledger, outsider, mail_fixture("outlook_reply.eml"), ada)

    assert store_position(ledger) == before


@sqlite_only
def test_importing_a_bounce_is_refused(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    raw = mail_fixture("postfix_bounce.eml", message_id=str(uuid.uuid4()))

    with pytest.raises(InvalidCommand, match="bounce"):
        import_email(ledger, staff, raw, ada)


def test_the_import_endpoint_records_as_the_authenticated_user(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    app = FastAPI()
    app.include_router(import_router(ledger, lambda: staff, REPLY_SECRET))

    response = TestClient(app).post(
        "/messages/import",
        params={"customer_id": ada},
        content=mail_fixture("outlook_reply.eml"),
    )
    missing = TestClient(app).post(
        "/messages/import", params={"customer_id": "c-nobody"}, content=b"x"
    )

    assert response.status_code == 201
    assert response.json()["customer_id"] == ada
    assert missing.status_code == 404


def test_the_inbound_hook_needs_the_companys_token(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    configure(ledger, staff, SendGridSigner())
    sent = queue_email(ledger, staff, ada)
    raw = mail_fixture("gmail_reply.eml", message_id=str(sent))
    path = "/webhooks/brightside/inbound-email"
    client = client_for(ledger)
    before = store_position(ledger)

    refused = client.post(path, content=raw, headers={"X-Ledger-Inbound-Token": "x"})
    unchanged = store_position(ledger)
    malformed = client.post(path, params={"token": INBOUND_TOKEN}, content=b"")
    accepted = client.post(path, params={"token": INBOUND_TOKEN}, content=raw)

    assert refused.status_code == 401
    assert unchanged == before
    assert malformed.status_code == 400
    assert accepted.status_code == 201
    assert accepted.json()["answers"] == str(sent)


def test_bounces_answer_with_one_receipt_per_failed_recipient(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada, to="old.address@example.net")
    raw = mail_fixture("postfix_bounce.eml", message_id=str(sent))
    accept_email(ledger, "brightside", raw)

    again = accept_email(ledger, "brightside", raw)

    assert isinstance(again, list)
    assert all(isinstance(r, ReportReceipt) for r in again)
    assert [r.state for r in again] == ["duplicate"]


def unsubscribe_mail(address: str) -> bytes:
    return (
        "From: Ada Fernsby <ada.fernsby@example.com>\r\n"
        f"To: {address}\r\n"
        "Subject: unsubscribe\r\n"
        "Message-ID: <unsub-7d1e@example.com>\r\n"
        "\r\n"
        "This message was automatically generated by Gmail.\r\n"
    ).encode()


def test_mail_to_the_signed_unsubscribe_address_suppresses_the_recipient(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    token = reply_address(sent, "brightside.example", REPLY_SECRET).split("+")[1]

    result = accept_email(
        ledger,
        "brightside",
        unsubscribe_mail(f"unsubscribe+{token}"),
        reply_secret=REPLY_SECRET,
    )

    assert isinstance(result, list)
    assert [r.suppressed for r in result] == ["ada.fernsby@example.com"]
    suppression = ledger.load(
        Suppression,
        Suppression.id_for("brightside", Channel.EMAIL, "ada.fernsby@example.com"),
    )
    assert suppression is not None and suppression.active
    assert get_message(ledger, staff, str(sent)).replies == []


def test_mail_to_the_unsubscribe_address_of_a_marketing_email_stops_marketing_only(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=ada,
            channel=Channel.EMAIL,
            category="marketing",
            subject="Spring whitening offer",
            body="Book before May.",
        ),
    ).message_id
    token = reply_address(sent, "brightside.example", REPLY_SECRET).split("+")[1]

    accept_email(
        ledger,
        "brightside",
        unsubscribe_mail(f"unsubscribe+{token}"),
        reply_secret=REPLY_SECRET,
    )

    def suppression(scope: str) -> Suppression | None:
        return ledger.load(
            Suppression,
            Suppression.id_for(
                "brightside", Channel.EMAIL, "ada.fernsby@example.com", scope
            ),
        )

    marketing = suppression(MARKETING)
    assert marketing is not None and marketing.active
    assert suppression(ALL) is None
    assert queue_email(ledger, staff, ada)


@sqlite_only
def test_a_forged_unsubscribe_address_suppresses_nobody(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    forged = reply_address(sent, "brightside.example", b"guess").split("+")[1]

    receive(ledger, unsubscribe_mail(f"unsubscribe+{forged}"))

    suppression = ledger.load(
        Suppression,
        Suppression.id_for("brightside", Channel.EMAIL, "ada.fernsby@example.com"),
    )
    assert suppression is None


def test_filing_an_unmatched_email_records_it_under_the_customer_once(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    kept = receive(ledger, mail_fixture("unknown_sender.eml"))

    message_id = file_unmatched(ledger, staff, str(kept.message_id), ada)

    filed = get_message(ledger, staff, str(message_id))
    assert (filed.customer_id, filed.sender) == (ada, "sam.visitor@example.org")
    assert filed.sent_by["user_id"] == "maria.lopez"
    assert unmatched_inbound(ledger, staff) == []
    with pytest.raises(InvalidTransition, match="already filed"):
        file_unmatched(ledger, staff, str(kept.message_id), ada)


def test_another_companys_unmatched_email_cannot_be_filed(
    ledger: Ledger, staff: Principal, outsider: Principal, ada: str
) -> None:
    kept = receive(ledger, mail_fixture("unknown_sender.eml"))
    before = store_position(ledger)

    with pytest.raises(NotFound):
        file_unmatched(ledger, outsider, str(kept.message_id), ada)

    assert store_position(ledger) == before
