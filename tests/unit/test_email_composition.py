"""The email the SMTP provider composes, read back with the standard library."""

from __future__ import annotations

import re
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smtp import MIME_POLICY, compose_email
from commands.ports import OutgoingAttachment
from tests.outgoing import outgoing_email

# Any character but surrogates and those `str.splitlines` breaks a header at.
LINE_BREAKS = "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"
one_line = st.characters(exclude_categories=["Cs"], exclude_characters=LINE_BREAKS)
any_text = st.characters(exclude_categories=["Cs"])
label = st.from_regex(r"[a-z0-9]+(-[a-z0-9]+)*", fullmatch=True)
local_part = st.from_regex(r"[a-z0-9]+([._+-][a-z0-9]+)*", fullmatch=True)
addresses = st.builds(
    "{}@{}.example".format,
    local_part,
    st.lists(label, min_size=1, max_size=3).map(".".join),
)
long_lines = st.lists(
    st.text(one_line, min_size=900, max_size=3000), min_size=1, max_size=2
).map("\n".join)
bodies = st.one_of(st.text(any_text, max_size=400), long_lines)
attachments = st.builds(
    OutgoingAttachment,
    # Readers strip a file name of the white space around it.
    name=st.text(one_line, min_size=1, max_size=120).filter(
        lambda name: name == name.strip()
    ),
    media_type=st.sampled_from(["application/pdf", "image/png", "text/csv", ""]),
    content=st.binary(max_size=4000),
)


def read_back(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    return lines_of(part.get_content())


def lines_of(text: str) -> str:
    """The text with line ends as a mail body has them: LF, one at the end."""
    text = re.sub(r"\r\n|\r", "\n", text)
    return text if text.endswith("\n") else text + "\n"


def addresses_in(message: EmailMessage, name: str) -> list[str]:
    header = message[name]
    return [] if header is None else [a.addr_spec for a in header.addresses]


@settings(max_examples=75, deadline=None)
@given(
    # Readers drop the white space around a header's value.
    subject=st.text(one_line, min_size=1, max_size=200).filter(
        lambda subject: subject == subject.strip()
    ),
    to=st.lists(addresses, min_size=1, max_size=3),
    cc=st.lists(addresses, max_size=3),
    bcc=st.lists(addresses, max_size=2),
    text=bodies,
    html=st.none() | bodies,
    files=st.lists(attachments, max_size=3),
)
def test_composed_email_reads_back_as_written_in_lines_of_at_most_998_octets(
    subject: str,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    text: str,
    html: str | None,
    files: list[OutgoingAttachment],
) -> None:
    email = outgoing_email(
        subject=subject,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        text=text,
        html=html,
        attachments=tuple(files),
    )

    raw = compose_email(email, with_bcc=True)

    message = read_back(raw)
    assert message["Subject"] == subject
    assert addresses_in(message, "To") == to
    assert addresses_in(message, "Cc") == cc
    assert addresses_in(message, "Bcc") == bcc
    assert body(message, "plain") == lines_of(text)
    assert body(message, "html") == (lines_of(html) if html else None)
    received = [
        (a.get_filename(), a.get_payload(decode=True))
        for a in message.iter_attachments()
    ]
    assert received == [(a.name, a.content) for a in files]
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert not any(b"\r" in line or b"\n" in line for line in lines)


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E) | one_line, max_size=90
    )
)
def test_a_subject_goes_out_as_the_library_folds_it(subject: str) -> None:
    # Short ASCII subjects are stored as written, to spare the library parsing
    # and folding them; what goes out must not differ from what it would write.
    folded = MIME_POLICY.fold_binary(
        "Subject", MIME_POLICY.header_factory("Subject", subject)
    )

    raw = compose_email(outgoing_email(subject=subject))

    headers, _, _ = raw.partition(b"\r\n\r\n")
    assert b"\r\n" + folded in b"\r\n" + headers + b"\r\n"


def test_a_body_holding_the_boundary_line_gets_a_boundary_it_does_not_hold() -> None:
    message_id = uuid.uuid4()
    text = f"Forwarded:\n--=_alternative.{message_id.hex}.1\nSee you."
    email = outgoing_email(message_id=message_id, text=text, html="<p>See you.</p>")

    message = read_back(compose_email(email))

    assert f"=_alternative.{message_id.hex}" not in message.get_boundary("")
    assert body(message, "plain") == lines_of(text)
    assert body(message, "html") == lines_of("<p>See you.</p>")


def test_headers_name_the_message_its_sender_and_its_replies() -> None:
    email = outgoing_email(reply_to="reply+7f3a.9c2e@reply.brightside.example")

    message = read_back(compose_email(email))

    assert message["From"] == "office@brightside.example"
    assert message["Message-ID"] == email.message_id_header
    assert message["Reply-To"] == "reply+7f3a.9c2e@reply.brightside.example"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime is not None
    assert message["Auto-Submitted"] is None


def test_addresses_too_long_for_a_line_leave_the_headers_whole() -> None:
    # Local parts longer than RFC 5321 allows, which the library folds with an
    # empty line between them (CPython gh-142006).
    to = ["reminders" * 9 + "@brightside.example", "statements" * 8 + "@example.com"]

    raw = compose_email(outgoing_email(to=tuple(to), subject="Tuesday"))

    headers, _, _ = raw.partition(b"\r\n\r\n")
    assert b"Subject: Tuesday" in headers
    assert addresses_in(read_back(raw), "To") == to


def test_marketing_email_offers_one_click_unsubscribe_with_links_left_whole() -> None:
    link = "https://brightside.example/unsubscribe/" + "k3Jx9" * 30
    email = outgoing_email(
        list_unsubscribe=(link, "mailto:unsubscribe@brightside.example")
    )

    raw = compose_email(email)

    message = read_back(raw)
    assert message["List-Unsubscribe"] == (
        f"<{link}>, <mailto:unsubscribe@brightside.example>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"List-Unsubscribe: <{link}>,\r\n".encode() in raw


def test_a_mailto_only_unsubscribe_has_no_one_click_post() -> None:
    email = outgoing_email(list_unsubscribe=("mailto:unsubscribe@brightside.example",))

    message = read_back(compose_email(email))

    assert message["List-Unsubscribe"] == "<mailto:unsubscribe@brightside.example>"
    assert message["List-Unsubscribe-Post"] is None


def test_a_plain_ascii_body_goes_as_it_is_and_any_other_in_seven_bit_encoding() -> None:
    plain = read_back(compose_email(outgoing_email(text="See you at 10:00.")))
    accented = read_back(compose_email(outgoing_email(text="À mardi, Ada.")))

    assert plain["Content-Transfer-Encoding"] == "7bit"
    assert accented["Content-Transfer-Encoding"] == "quoted-printable"


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hello\r\nBcc: everyone@example.net"},
        {"subject": "Hello\u2028there"},
        {"to": ("ada.fernsby@example.com\nBcc: everyone@example.net",)},
        {"reply_to": "reply+1.2@brightside.example\r\nX-Spam: no"},
        {"message_id_header": "<a@brightside.example>\nX-Spam: no"},
        {"list_unsubscribe": ("https://brightside.example/u\r\nX-Spam: no",)},
        {"attachments": (OutgoingAttachment("plan\r\n.pdf", "application/pdf", b""),)},
        {"attachments": (OutgoingAttachment("plan.pdf", "text/plain\nX: y", b""),)},
    ],
)
def test_a_line_break_in_a_header_value_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="a header value contains a line break"):
        compose_email(outgoing_email(**fields))


def test_a_non_ascii_address_is_refused() -> None:
    with pytest.raises(ValueError, match="is not an ASCII address"):
        compose_email(outgoing_email(cc=("adé@example.com",)))


@pytest.mark.parametrize("media_type", ["multipart/mixed", "message/rfc822", ""])
def test_an_attachment_of_a_type_that_needs_parsing_goes_as_octet_stream(
    media_type: str,
) -> None:
    file = OutgoingAttachment("forwarded.eml", media_type, b"Subject: hi\n\nhello\n")

    raw = compose_email(outgoing_email(attachments=(file,)))

    [attachment] = read_back(raw).iter_attachments()
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == file.content
