"""The dispatcher sending through a real SMTP server: back-off, failures, repeats."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.outbox import JsonLinesSmsOutbox
from adapters.smtp import SmtpProvider, SmtpSettings
from commands.application import Ledger
from commands.delivery import get_message
from commands.dispatch import Dispatcher, DispatchPolicy
from commands.models import SendMessage
from commands.send import send_message
from ledger.message import Message
from ledger.values import Principal, Status
from tests.integration.smtp_sink import Sink, smtp_server

ADA = "ada.fernsby@example.com"


def dispatch(ledger: Ledger, port: int, tmp_path: Path, timeout: float = 30) -> None:
    dispatcher = Dispatcher(
        ledger,
        SmtpProvider(SmtpSettings("127.0.0.1", port, tls="none", timeout=timeout)),
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
        DispatchPolicy(max_tries=3, first_backoff=0.01),
    )

    async def go() -> None:
        try:
            await dispatcher.drain()
        finally:
            await dispatcher.email.close()

    asyncio.run(go())


def queue_email(ledger: Ledger, staff: Principal, ada: str) -> str:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(customer_id=ada, channel="email", subject="Hello", body="Hi Ada"),
    )
    return str(receipt.message_id)


def outcomes(ledger: Ledger, message: Message) -> list[Message.ProviderEvent]:
    return [
        e for e in ledger.events.get(message.id) if isinstance(e, Message.ProviderEvent)
    ]


def test_greylisted_email_is_sent_after_backing_off(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    message_id = queue_email(ledger, staff, ada)
    sink = Sink(rcpt_answers={ADA: ["451 4.7.1 Greylisted", "250 OK"]})

    with smtp_server(sink) as port:
        dispatch(ledger, port, tmp_path)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.SENT
    [sent] = outcomes(ledger, message)
    assert isinstance(sent, Message.Sent)
    assert sent.provider == "smtp"
    assert sent.detail["response"] == "2.0.0 Ok: queued"
    assert len(sink.received) == 1


def test_persistent_4xx_fails_after_the_last_try_as_not_permanent(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    message_id = queue_email(ledger, staff, ada)
    sink = Sink(rcpt_answers={ADA: ["452 4.2.2 Mailbox full"] * 3})

    with smtp_server(sink) as port:
        dispatch(ledger, port, tmp_path)

    message = get_message(ledger, staff, message_id)
    [failed] = outcomes(ledger, message)
    assert isinstance(failed, Message.Failed)
    assert not failed.permanent
    assert "Gave up after 3 tries" in failed.reason
    assert failed.detail["refused"] == {ADA: "452 4.2.2 Mailbox full"}


def test_5xx_fails_at_once_keeping_the_servers_answer_verbatim(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    message_id = queue_email(ledger, staff, ada)
    sink = Sink(rcpt_answers={ADA: ["550 5.1.1 <ada.fernsby@example.com>: unknown"]})

    with smtp_server(sink) as port:
        dispatch(ledger, port, tmp_path)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.FAILED
    [failed] = outcomes(ledger, message)
    assert isinstance(failed, Message.Failed)
    assert failed.permanent
    assert "550 5.1.1 <ada.fernsby@example.com>: unknown" in failed.detail["response"]
    assert sink.rcpt_answers[ADA] == []


def test_lost_connection_is_retried_with_the_same_message_id_and_recorded_once(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    message_id = queue_email(ledger, staff, ada)
    sink = Sink(drop_data=1)

    with smtp_server(sink) as port:
        dispatch(ledger, port, tmp_path)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.SENT
    assert len(outcomes(ledger, message)) == 1
    first, second = sink.message_ids
    assert first == second
    assert first.startswith(f"<{message_id}.1@")


def test_timeout_after_data_is_retried_with_the_same_message_id_and_recorded_once(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    message_id = queue_email(ledger, staff, ada)
    sink = Sink(late_answers=[0.5])

    with smtp_server(sink) as port:
        dispatch(ledger, port, tmp_path, timeout=0.2)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.SENT
    [sent] = outcomes(ledger, message)
    assert isinstance(sent, Message.Sent)
    assert sent.provider_message_id.startswith(f"<{message_id}.1@")
    assert sink.message_ids == [sent.provider_message_id] * 2
