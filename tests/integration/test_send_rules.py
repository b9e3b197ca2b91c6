"""The send rules, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest

from commands.application import Ledger
from commands.delivery import get_message
from commands.models import SaveTemplate, SendMessage, Suppress, Unsuppress
from commands.send import send_message
from commands.suppressions import suppress, unsuppress
from commands.templates import save_template
from ledger.errors import (
    IdempotencyKeyReused,
    InvalidCommand,
    MissingMergeTag,
    NotFound,
    PermissionDenied,
    RecipientSuppressed,
)
from ledger.message import Message
from ledger.values import Channel, Principal, Status


def events_in(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def send(ledger: Ledger, principal: Principal, **fields: Any) -> Message:
    receipt = send_message(ledger, principal, SendMessage(**fields))
    return get_message(ledger, principal, str(receipt.message_id))


def refused(ledger: Ledger, principal: Principal, **fields: Any) -> InvalidCommand:
    before = events_in(ledger)
    with pytest.raises(InvalidCommand) as caught:
        send_message(ledger, principal, SendMessage(**fields))
    assert events_in(ledger) == before
    return caught.value


EMAIL = {"channel": Channel.EMAIL, "subject": "Your visit", "body": "See you soon."}


def test_an_email_goes_to_the_customers_primary_address(ledger, staff, ada):
    message = send(ledger, staff, customer_id=ada, **EMAIL)

    assert message.to == ["ada.fernsby@example.com"]
    assert message.sender == "office@brightside.example"
    assert message.status == Status.QUEUED
    assert message.sent_by == {"user_id": "maria.lopez", "trigger": None}


def test_the_recipient_can_be_overridden(ledger, staff, ada):
    message = send(ledger, staff, customer_id=ada, to="ada@work.example.com", **EMAIL)

    assert message.to == ["ada@work.example.com"]


def test_an_sms_number_is_normalised_to_e164(ledger, staff, farid):
    message = send(
        ledger,
        staff,
        customer_id=farid,
        channel=Channel.SMS,
        to="(201) 555-0199",
        body="Hi",
    )

    assert message.to == ["+12015550199"]
    assert message.sms_segments == 1


def test_a_customer_with_no_email_on_file_cannot_be_emailed(ledger, staff, farid):
    error = refused(ledger, staff, customer_id=farid, **EMAIL)

    assert error.field == "channel"
    assert "no email address on file" in error.message


def test_cc_and_bcc_take_comma_separated_lists(ledger, staff, ada):
    message = send(
        ledger,
        staff,
        customer_id=ada,
        cc="a@example.com, b@example.com",
        bcc="c@example.org",
        **EMAIL,
    )

    assert message.cc == ["a@example.com", "b@example.com"]
    assert message.bcc == ["c@example.org"]


def test_a_bad_cc_address_is_refused_naming_the_field(ledger, staff, ada):
    error = refused(ledger, staff, customer_id=ada, cc="a@example.com, nope", **EMAIL)

    assert error.field == "cc"
    assert "'nope' is not a valid email address" in error.message


def test_a_bad_recipient_number_is_refused(ledger, staff, farid):
    error = refused(
        ledger, staff, customer_id=farid, channel=Channel.SMS, to="12", body="Hi"
    )

    assert error.field == "to"


def test_cc_is_for_email_only(ledger, staff, farid):
    error = refused(
        ledger,
        staff,
        customer_id=farid,
        channel=Channel.SMS,
        cc="a@example.com",
        body="Hi",
    )

    assert error.field == "cc"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (None, "needs a subject"),
        ("Line one\nline two", "line break"),
        ("x" * 201, "Subject is 201 characters; the limit is 200."),
    ],
)
def test_an_email_subject_is_one_line_of_1_to_200_characters(
    ledger, staff, ada, subject, expected
):
    error = refused(
        ledger,
        staff,
        customer_id=ada,
        channel=Channel.EMAIL,
        subject=subject,
        body="Hello",
    )

    assert error.field == "subject"
    assert expected in error.message


def test_an_sms_has_no_subject(ledger, staff, farid):
    error = refused(
        ledger, staff, customer_id=farid, channel=Channel.SMS, subject="Hi", body="Hi"
    )

    assert error.field == "subject"


def test_an_empty_body_is_refused(ledger, staff, ada):
    error = refused(
        ledger, staff, customer_id=ada, channel=Channel.EMAIL, subject="Hi", body=" "
    )

    assert error.field == "body"


def test_an_sms_over_the_segment_limit_is_refused(ledger, staff, farid):
    error = refused(
        ledger, staff, customer_id=farid, channel=Channel.SMS, body="x" * 153 * 10 + "y"
    )

    assert error.field == "body"
    assert "11 segments" in error.message


def test_a_template_fills_subject_and_body_and_explicit_values_win(ledger, staff, ada):
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="confirm",
            channel=Channel.EMAIL,
            subject="Appointment on {{ appointment_time }}",
            body="Hello {{ customer_first_name }}, see you {{ appointment_time }}.",
        ),
    )

    rendered = send(
        ledger,
        staff,
        customer_id=ada,
        channel=Channel.EMAIL,
        template_id="confirm",
        merge_values={"appointment_time": "June 3"},
    )
    overridden = send(
        ledger,
        staff,
        customer_id=ada,
        channel=Channel.EMAIL,
        template_id="confirm",
        merge_values={"appointment_time": "June 3"},
        subject="Changed",
    )

    assert rendered.subject == "Appointment on June 3"
    assert rendered.text == "Hello Ada, see you June 3."
    assert (rendered.template_id, rendered.template_version) == ("confirm", 1)
    assert rendered.merge_values == {"appointment_time": "June 3"}
    assert overridden.subject == "Changed"


def test_a_missing_merge_tag_is_named_and_nothing_is_recorded(ledger, staff, ada):
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="t",
            channel=Channel.EMAIL,
            subject="Hi",
            body="Due {{ due_date }}",
        ),
    )

    error = refused(
        ledger, staff, customer_id=ada, channel=Channel.EMAIL, template_id="t"
    )

    assert isinstance(error, MissingMergeTag)
    assert error.tag == "due_date"


def test_saving_a_template_again_adds_a_version_and_old_ones_stay(ledger, staff, ada):
    for body in ("First {{ customer_name }}", "Second {{ customer_name }}"):
        save_template(
            ledger,
            staff,
            SaveTemplate(
                template_id="t", channel=Channel.EMAIL, subject="S", body=body
            ),
        )

    old = send(
        ledger,
        staff,
        customer_id=ada,
        channel=Channel.EMAIL,
        template_id="t",
        template_version=1,
    )
    new = send(ledger, staff, customer_id=ada, channel=Channel.EMAIL, template_id="t")

    assert old.text == "First Ada Fernsby"
    assert (new.text, new.template_version) == ("Second Ada Fernsby", 2)


def test_attachments_are_stored_by_content_outside_the_event(ledger, staff, ada):
    pdf = b"%PDF-1.4 statement"

    message = send(
        ledger,
        staff,
        customer_id=ada,
        attachments=[{"name": "statement.pdf", "content": pdf}],
        **EMAIL,
    )

    (attachment,) = message.attachments
    assert attachment["media_type"] == "application/pdf"
    assert attachment["size"] == len(pdf)
    assert ledger.blobs.get(attachment["sha256"]) == pdf


def test_attachments_over_the_limit_are_refused(ledger, staff, ada):
    big = b"x" * (25 * 1024 * 1024 + 1)

    error = refused(
        ledger,
        staff,
        customer_id=ada,
        attachments=[{"name": "big.bin", "content": big}],
        **EMAIL,
    )

    assert error.field == "attachments"
    assert "the limit is 25.0 MB" in error.message


def test_a_suppressed_recipient_is_refused_with_the_reason(ledger, staff, ada):
    suppress(
        ledger,
        staff,
        Suppress(
            channel=Channel.EMAIL,
            address="Ada.Fernsby@example.com",
            reason="asked by phone",
        ),
    )
    before = events_in(ledger)

    with pytest.raises(RecipientSuppressed) as caught:
        send(ledger, staff, customer_id=ada, **EMAIL)

    assert "asked by phone" in caught.value.message
    assert events_in(ledger) == before


def test_a_lifted_suppression_allows_sending_again(ledger, staff, ada):
    address = "ada.fernsby@example.com"
    suppress(
        ledger, staff, Suppress(channel=Channel.EMAIL, address=address, reason="x")
    )
    unsuppress(
        ledger,
        staff,
        Unsuppress(
            channel=Channel.EMAIL, address=address, reason="customer asked again"
        ),
    )

    message = send(ledger, staff, customer_id=ada, **EMAIL)

    assert message.status == Status.QUEUED


def test_a_repeated_idempotency_key_returns_the_original_and_appends_nothing(
    ledger, staff, ada
):
    command = SendMessage(customer_id=ada, idempotency_key="appt-77", **EMAIL)
    first = send_message(ledger, staff, command)
    before = events_in(ledger)

    again = send_message(ledger, staff, command)

    assert again.message_id == first.message_id
    assert (first.created, again.created) == (True, False)
    assert events_in(ledger) == before


def test_an_idempotency_key_reused_for_other_content_is_refused(ledger, staff, ada):
    send_message(
        ledger, staff, SendMessage(customer_id=ada, idempotency_key="k", **EMAIL)
    )

    with pytest.raises(IdempotencyKeyReused):
        send_message(
            ledger,
            staff,
            SendMessage(
                customer_id=ada,
                idempotency_key="k",
                channel=Channel.EMAIL,
                subject="Other",
                body="Other",
            ),
        )


def test_the_same_idempotency_key_in_two_companies_makes_two_messages(
    ledger, staff, outsider, ada
):
    first = send_message(
        ledger, staff, SendMessage(customer_id=ada, idempotency_key="k", **EMAIL)
    )

    with pytest.raises(NotFound):
        send_message(
            ledger, outsider, SendMessage(customer_id=ada, idempotency_key="k", **EMAIL)
        )

    assert first.created


def test_sending_needs_the_create_permission(ledger, viewer, ada):
    before = events_in(ledger)

    with pytest.raises(PermissionDenied):
        send_message(ledger, viewer, SendMessage(customer_id=ada, **EMAIL))

    assert events_in(ledger) == before


def test_another_company_cannot_read_a_message(ledger, staff, outsider, ada):
    message = send(ledger, staff, customer_id=ada, **EMAIL)

    with pytest.raises(NotFound):
        get_message(ledger, outsider, str(message.id))


def test_an_unknown_customer_is_refused(ledger, staff, company):
    with pytest.raises(NotFound):
        send_message(ledger, staff, SendMessage(customer_id="nobody", **EMAIL))
