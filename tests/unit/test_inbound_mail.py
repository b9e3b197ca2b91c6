"""Reading real-world email: replies, auto-replies, forwards and bounces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.inbound_mail import read_email, without_quoted_history
from commands.ports import MemoryBlobStore
from commands.threading import InboundEmail, normal_subject
from commands.tracking import DeliveryReport, provider_key
from ledger.errors import InvalidCommand
from tests.integration.tracking_support import mail_fixture

MESSAGE_ID = "5b7e2a91-3c4d-4e8f-9a0b-1c2d3e4f5a6b"
OUR_HEADER = f"<{MESSAGE_ID}.1@brightside.example>"


def read(name: str, forwarded: bool = False) -> InboundEmail | DeliveryReport:
    raw = mail_fixture(
        name, message_id=MESSAGE_ID, reply_to="reply+00.00@brightside.example"
    )
    return read_email(raw, MemoryBlobStore(), forwarded=forwarded)


def email(name: str, forwarded: bool = False) -> InboundEmail:
    parsed = read(name, forwarded)
    assert isinstance(parsed, InboundEmail)
    return parsed


def test_a_gmail_reply_keeps_the_answer_without_the_wrapped_attribution() -> None:
    reply = email("gmail_reply.eml")

    assert reply.text == (
        "Thanks! Tuesday at 3pm works for me. Could you send the address of "
        "the new office?\n\nAda"
    )
    assert reply.references[0] == OUR_HEADER
    assert reply.sender == "ada.fernsby@example.com"


def test_html_is_sanitised_before_anything_can_display_it() -> None:
    reply = email("gmail_reply.eml")

    assert reply.html is not None
    assert "<script" not in reply.html
    assert "onerror" not in reply.html
    assert "Tuesday at 3pm works for me" in reply.html


def test_an_outlook_reply_drops_the_history_below_the_separator() -> None:
    reply = email("outlook_reply.eml")

    assert reply.text.endswith("Kind regards,\nAda Fernsby")
    assert "Sent:" not in reply.text


def test_attachments_are_stored_by_their_digest() -> None:
    blobs = MemoryBlobStore()

    parsed = read_email(mail_fixture("outlook_reply.eml"), blobs)

    assert isinstance(parsed, InboundEmail)
    [attachment] = parsed.attachments
    assert attachment["name"] == "insurance-form.pdf"
    assert attachment["media_type"] == "application/pdf"
    assert blobs.get(attachment["sha256"]).startswith(b"%PDF-1.4")


def test_an_apple_mail_reply_drops_the_quoted_lines() -> None:
    reply = email("apple_mail_reply.eml")

    assert reply.text == (
        "I\u2019ll be there. Can I park behind the building?\n\nSent from my iPhone"
    )


def test_an_exchange_out_of_office_is_flagged_as_an_auto_reply() -> None:
    assert email("exchange_auto_reply.eml").auto_reply
    assert not email("gmail_reply.eml").auto_reply


@pytest.mark.parametrize(
    ("name", "recipient", "status"),
    [
        ("postfix_bounce.eml", "old.address@example.net", "5.1.1"),
        ("exim_bounce.eml", "busy.inbox@example.org", "5.2.2"),
        ("gmail_bounce.eml", "nobody.here@example.com", "5.1.1"),
        ("exchange_bounce.eml", "j.doe@contoso.example", "5.1.10"),
    ],
)
def test_bounces_from_common_servers_name_the_recipient_status_and_original(
    name: str, recipient: str, status: str
) -> None:
    report = read(name)

    assert isinstance(report, DeliveryReport)
    [block] = report.recipients
    assert (block.recipient, block.status, block.action) == (
        recipient,
        status,
        "failed",
    )
    assert block.diagnostic and status in block.diagnostic
    assert OUR_HEADER in report.original_message_ids


def test_a_forward_as_attachment_yields_the_customers_original() -> None:
    original = email("forward_attached.eml", forwarded=True)

    assert original.sender == "ada.fernsby@example.com"
    assert original.text == "Hi Maria, could we move it to Wednesday instead?"
    assert original.references[0] == OUR_HEADER


def test_an_inline_forward_yields_the_customers_original() -> None:
    original = email("forward_inline.eml", forwarded=True)

    assert original.sender == "ada.fernsby@example.com"
    assert original.subject == "Re: Your appointment on Tuesday"
    assert original.text == "Never mind Wednesday, Tuesday is fine after all."


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n", b"just some words\n", b"Subject: x\n\nhi"]
)
def test_something_that_is_not_a_message_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidCommand):
        read_email(raw, MemoryBlobStore())


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (
            "Yes.\n\nLe mer. 3 déc. 2026 à 10:02, Brightside <o@b.example>"
            " a écrit :\n> x",
            "Yes.",
        ),
        (
            "Ja.\n\nAm Mi., 3. Dez. 2026 um 10:02 Uhr schrieb Brightside"
            " <o@b.example>:\n> x",
            "Ja.",
        ),
        ("Fine.\n-----Original Message-----\nFrom: Brightside", "Fine."),
        ("> only a quote", "> only a quote"),
    ],
)
def test_quoted_history_is_cut_at_the_usual_attribution_lines(
    text: str, kept: str
) -> None:
    assert without_quoted_history(text) == kept


def test_reply_and_forward_prefixes_are_ignored_when_comparing_subjects() -> None:
    assert normal_subject("RE: Fwd:  Your appointment  on Tuesday") == (
        "your appointment on tuesday"
    )
    assert normal_subject("AW: WG: Termin") == "termin"


def test_sendgrid_message_ids_lose_their_relay_suffix_in_both_known_forms() -> None:
    assert provider_key(
        "sendgrid", "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
    ) == ("14c5d75ce93.dfd.64b469")
    assert provider_key(
        "sendgrid", "Qm7pXk2vT0eLh9sYw3RzAg.recvd-5c8d7f9b6-x2kqp-1-6930A1F8-4.0"
    ) == ("Qm7pXk2vT0eLh9sYw3RzAg")
    assert provider_key("twilio", "SM5f2b.9c") == "SM5f2b.9c"


REPLY_LINE = st.text(
    alphabet=st.sampled_from("abcdefghij KLMNOP 0123456789.,!?'"), max_size=40
).filter(lambda line: line.strip() != "" and line.split()[0] not in {"On", "Le"})


@given(
    reply=st.lists(REPLY_LINE, min_size=1, max_size=6),
    quoted=st.lists(REPLY_LINE, max_size=6),
    wrapped=st.booleans(),
)
def test_any_reply_survives_and_any_gmail_style_history_is_cut(
    reply: list[str], quoted: list[str], wrapped: bool
) -> None:
    attribution = "On Wed, Dec 3, 2026 at 10:02 AM Brightside <o@b.example> wrote:"
    if wrapped:
        attribution = attribution.replace(" wrote:", "\nwrote:")
    history = "\n".join(f"> {line}" for line in quoted)
    text = "\n".join(reply) + "\n\n" + attribution + "\n\n" + history

    kept = without_quoted_history(text)

    assert kept == "\n".join(line.rstrip() for line in reply).strip()
