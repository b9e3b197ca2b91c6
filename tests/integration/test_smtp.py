"""The SMTP provider against a real aiosmtpd server started by each test."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from adapters.smtp import BadSmtpUrl, SmtpProvider, SmtpSettings
from commands.ports import (
    OutcomeKind,
    OutgoingAttachment,
    OutgoingEmail,
    SendOutcome,
)
from tests.integration.smtp_sink import Sink, make_tls, smtp_server
from tests.outgoing import outgoing_email

ADA = "ada.fernsby@example.com"
BEN = "ben.okafor@example.com"


def send(provider: SmtpProvider, *emails: OutgoingEmail) -> list[SendOutcome]:
    async def go() -> list[SendOutcome]:
        try:
            return [await provider.send_email(e) for e in emails]
        finally:
            await provider.close()
            # A TLS transport finishes closing a few loop turns after close();
            # ending the loop first would leave its socket to the collector.
            await asyncio.sleep(0.1)

    return asyncio.run(go())


def plain(port: int, **settings: object) -> SmtpProvider:
    options: dict[str, Any] = {"tls": "none", **settings}
    return SmtpProvider(SmtpSettings("127.0.0.1", port, **options))


def test_email_arrives_with_headers_alternatives_and_attachment() -> None:
    sink = Sink()
    outgoing = outgoing_email(
        cc=(BEN,),
        bcc=("records@brightside.example",),
        html="<p>See you at <b>10:00</b>.</p>",
        reply_to="reply+abc.def@reply.brightside.example",
        attachments=(OutgoingAttachment("plan.pdf", "application/pdf", b"%PDF-1.4"),),
    )

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing)

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert outcome.provider_message_id == outgoing.message_id_header
    [received] = sink.received
    assert received.mail_from == "office@brightside.example"
    assert sorted(received.rcpt_tos) == sorted([ADA, BEN, "records@brightside.example"])
    mail = received.message
    assert mail["Message-ID"] == outgoing.message_id_header
    assert mail["Reply-To"] == "reply+abc.def@reply.brightside.example"
    assert mail["Cc"] == BEN
    assert mail["Bcc"] is None
    body = mail.get_body(preferencelist=("html",))
    assert body is not None and "<b>10:00</b>" in body.get_content()
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().strip() == "See you at 10:00."
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "plan.pdf"
    assert attachment.get_content() == b"%PDF-1.4"


def test_starttls_with_auth_logs_in_over_the_encrypted_channel() -> None:
    sink, tls = Sink(), make_tls()

    with smtp_server(sink, tls=tls, auth=True) as port:
        provider = SmtpProvider(
            SmtpSettings(
                "127.0.0.1",
                port,
                tls="starttls",
                username="brightside",
                password="s3cret-pass",
            ),
            tls_context=tls.client_context(),
        )
        [outcome] = send(provider, outgoing_email())

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert sink.logins == ["brightside"]
    assert len(sink.received) == 1


def test_wrong_password_is_a_permanent_failure() -> None:
    sink, tls = Sink(), make_tls()

    with smtp_server(sink, tls=tls, auth=True) as port:
        provider = SmtpProvider(
            SmtpSettings(
                "127.0.0.1", port, tls="starttls", username="x", password="wrong"
            ),
            tls_context=tls.client_context(),
        )
        [outcome] = send(provider, outgoing_email())

    assert outcome.kind == OutcomeKind.PERMANENT
    assert "535" in outcome.reason
    assert sink.received == []


def test_implicit_tls_sends_over_tls_from_the_first_byte() -> None:
    sink, tls = Sink(), make_tls()

    with smtp_server(sink, tls=tls, implicit=True) as port:
        provider = SmtpProvider(
            SmtpSettings("127.0.0.1", port, tls="implicit"),
            tls_context=tls.client_context(),
        )
        [outcome] = send(provider, outgoing_email())

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert len(sink.received) == 1


def test_untrusted_certificate_is_not_accepted() -> None:
    sink, tls = Sink(), make_tls()

    with smtp_server(sink, tls=tls, implicit=True) as port:
        provider = SmtpProvider(
            SmtpSettings("127.0.0.1", port, tls="implicit"),
            tls_context=ssl.create_default_context(),
        )
        [outcome] = send(provider, outgoing_email())

    assert outcome.kind == OutcomeKind.TRANSIENT
    assert sink.received == []


def test_4xx_reply_is_transient_and_keeps_the_servers_words() -> None:
    sink = Sink(rcpt_answers={ADA: ["451 4.7.1 Greylisted, try again later"]})

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == OutcomeKind.TRANSIENT
    assert "451" in outcome.reason and "Greylisted" in outcome.reason
    assert outcome.refused == {ADA: "451 4.7.1 Greylisted, try again later"}


def test_5xx_reply_is_permanent() -> None:
    sink = Sink(rcpt_answers={ADA: ["550 5.1.1 No such user"]})

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == OutcomeKind.PERMANENT
    assert "550 5.1.1 No such user" in outcome.reason


def test_partial_refusal_is_accepted_and_recorded_per_recipient() -> None:
    sink = Sink(rcpt_answers={BEN: ["550 5.1.1 No such user"]})

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email(cc=(BEN,)))

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert outcome.accepted == (ADA,)
    assert outcome.refused == {BEN: "550 5.1.1 No such user"}
    assert sink.received[0].rcpt_tos == [ADA]


def test_server_closing_during_recipients_is_transient_and_sends_nothing() -> None:
    sink = Sink(rcpt_answers={BEN: ["421 4.3.2 Service shutting down"]})

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email(cc=(BEN,)))

    assert outcome.kind == OutcomeKind.TRANSIENT
    assert "421 4.3.2 Service shutting down" in outcome.reason
    assert sink.received == []


def test_server_that_knows_no_ehlo_is_greeted_with_helo() -> None:
    sink = Sink(knows_ehlo=False)

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert sink.received[0].rcpt_tos == [ADA]


def test_recipient_answered_251_will_forward_is_accepted() -> None:
    sink = Sink(rcpt_answers={ADA: ["251 2.1.5 User not local; will forward"]})

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert outcome.accepted == (ADA,)
    assert sink.received[0].rcpt_tos == [ADA]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("451 4.3.0 Sender check deferred", OutcomeKind.TRANSIENT),
        ("553 5.7.1 Sender address rejected", OutcomeKind.PERMANENT),
    ],
)
def test_refused_sender_fails_with_the_servers_answer(
    answer: str, kind: OutcomeKind
) -> None:
    sink = Sink(mail_answers=[answer])

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == kind
    assert answer in outcome.reason
    assert sink.received == []


def test_size_is_declared_so_an_oversized_email_is_refused_before_its_data() -> None:
    sink = Sink()
    scan = OutgoingAttachment("scan.pdf", "application/pdf", b"%PDF-1.4 " * 2000)

    with smtp_server(sink, size_limit=10_000) as port:
        big, small = send(
            plain(port), outgoing_email(attachments=(scan,)), outgoing_email()
        )

    assert big.kind == OutcomeKind.PERMANENT
    assert "552" in big.reason and "fixed maximum message size" in big.reason
    assert small.kind == OutcomeKind.ACCEPTED
    assert len(sink.received) == 1


@pytest.mark.parametrize(
    "address",
    ["ben.okafor@example.com> NOTIFY=NEVER", "ben okafor@example.com", "ben.okafor"],
)
def test_address_that_could_alter_the_smtp_command_is_refused_unsent(
    address: str,
) -> None:
    sink = Sink()

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing_email(bcc=(address,)))

    assert outcome.kind == OutcomeKind.PERMANENT
    assert "could not be composed" in outcome.reason
    assert sink.received == []


def test_connection_dropped_after_data_is_an_unknown_outcome_then_reconnects() -> None:
    sink = Sink(drop_data=1)
    first = outgoing_email()

    with smtp_server(sink) as port:
        outcomes = send(plain(port), first, first)

    assert [o.kind for o in outcomes] == [OutcomeKind.UNKNOWN, OutcomeKind.ACCEPTED]
    assert sink.message_ids == [first.message_id_header] * 2


def test_timeout_waiting_for_the_answer_to_data_is_an_unknown_outcome() -> None:
    sink = Sink(late_answers=[0.5])
    first = outgoing_email()

    with smtp_server(sink) as port:
        outcomes = send(plain(port, timeout=0.2), first, first)

    assert [o.kind for o in outcomes] == [OutcomeKind.UNKNOWN, OutcomeKind.ACCEPTED]
    assert outcomes[0].detail["error"] == "SMTPReadTimeoutError"
    assert sink.message_ids == [first.message_id_header] * 2


def test_server_that_is_down_is_a_transient_failure() -> None:
    with smtp_server(Sink()) as port:
        pass

    [outcome] = send(plain(port), outgoing_email())

    assert outcome.kind == OutcomeKind.TRANSIENT
    assert "Could not reach" in outcome.reason


def test_pool_reuses_its_connections_for_many_messages() -> None:
    sink = Sink()

    async def go(provider: SmtpProvider) -> list[SendOutcome]:
        try:
            return list(
                await asyncio.gather(
                    *(provider.send_email(outgoing_email()) for _ in range(12))
                )
            )
        finally:
            await provider.close()

    with smtp_server(sink) as port:
        outcomes = asyncio.run(go(plain(port, pool_size=2)))

    assert all(o.kind == OutcomeKind.ACCEPTED for o in outcomes)
    assert len({r.peer for r in sink.received}) == 2


def test_smtp_url_gives_host_port_tls_and_credentials() -> None:
    settings = SmtpSettings.from_url(
        "smtp://office%40brightside.example:p%40ss@mail.example.net:2525"
        "?tls=implicit&pool=6"
    )

    assert settings == SmtpSettings(
        "mail.example.net",
        2525,
        tls="implicit",
        username="office@brightside.example",
        password="p@ss",
        pool_size=6,
    )


@pytest.mark.parametrize(
    "url",
    ["http://mail.example.net", "smtp://mail.example.net?tls=maybe", "smtp://h:x"],
)
def test_bad_smtp_url_is_refused_with_a_sentence_and_no_password(url: str) -> None:
    with pytest.raises(BadSmtpUrl, match="LEDGER_SMTP_URL") as raised:
        SmtpSettings.from_url(url.replace("//", "//user:hunter2@"))

    assert "hunter2" not in raised.value.message


def test_accented_subject_and_file_name_arrive_intact() -> None:
    sink = Sink()
    outgoing = outgoing_email(
        subject="Rendez-vous confirmé pour mardi ✓",
        text="À mardi, Ada.",
        attachments=(OutgoingAttachment("reçu.pdf", "application/pdf", b"%PDF"),),
    )

    with smtp_server(sink) as port:
        [outcome] = send(plain(port), outgoing)

    assert outcome.kind == OutcomeKind.ACCEPTED
    mail = sink.received[0].message
    assert mail["Subject"] == "Rendez-vous confirmé pour mardi ✓"
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().strip() == "À mardi, Ada."
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "reçu.pdf"
