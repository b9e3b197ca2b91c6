"""The dispatcher against both stores, sending into the embedded outboxes."""

from __future__ import annotations

import asyncio
import json
import mailbox
import threading
import uuid
from collections.abc import Mapping, Sequence
from email.message import Message as MimeMessage
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from adapters.dispatcher import serve
from adapters.outbox import JsonLinesSmsOutbox, MaildirOutbox
from commands.application import Creation, Ledger
from commands.delivery import get_message, record_delivery_event, retry_message
from commands.directory import upsert_customer
from commands.dispatch import (
    Batch,
    Dispatcher,
    DispatchPolicy,
    DispatchReport,
    Partition,
)
from commands.inbound import record_inbound
from commands.models import (
    AttachmentUpload,
    RecordDeliveryEvent,
    RecordInbound,
    RetryMessage,
    SendMessage,
    Suppress,
    Unsuppress,
    UpsertCustomer,
)
from commands.ports import BatchReader, OutgoingEmail, SendOutcome, now
from commands.resend import resend_message
from commands.send import send_message
from commands.suppressions import suppress, unsuppress
from ledger.errors import InvalidTransition, StoreUnavailable
from ledger.mail_identity import parse_message_id_header, parse_reply_address
from ledger.message import Message
from ledger.values import Channel, Principal, Status

SECRET = b"test reply secret"
BEN = "ben.okafor@example.com"


def dispatcher_for(ledger: Ledger, outbox: Path, **policy: object) -> Dispatcher:
    return Dispatcher(
        ledger,
        MaildirOutbox(outbox / "mail"),
        JsonLinesSmsOutbox(outbox / "sms.jsonl"),
        DispatchPolicy(
            reply_domain="reply.brightside.example",
            reply_secret=SECRET,
            unsubscribe_url="https://brightside.example/unsubscribe",
            first_backoff=0.0,
            **policy,  # type: ignore[arg-type]
        ),
    )


def email_to(ada: str, **fields: object) -> SendMessage:
    return SendMessage(
        customer_id=ada,
        channel="email",
        subject="Your appointment on Tuesday",
        body="See you at 10:00.",
        **fields,  # type: ignore[arg-type]
    )


def mail_in(outbox: Path) -> list[MimeMessage]:
    return list(mailbox.Maildir(outbox / "mail", create=False))


def sent_events(ledger: Ledger, message_id: object) -> list[Message.Sent]:
    return [e for e in ledger.events.get(message_id) if isinstance(e, Message.Sent)]


def test_queued_email_is_written_to_the_outbox_and_recorded_as_sent(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada, html="<p>See you</p>"))

    report = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.status == Status.SENT
    assert report.sent == 1
    [mail] = mail_in(tmp_path)
    assert mail["To"] == "ada.fernsby@example.com"
    assert mail["From"] == "office@brightside.example"
    assert parse_message_id_header(mail["Message-ID"]) == (receipt.message_id, 1)
    assert parse_reply_address(mail["Reply-To"], SECRET) == receipt.message_id
    assert mail.get_content_type() == "multipart/alternative"
    assert "List-Unsubscribe" not in mail
    [sent] = sent_events(ledger, receipt.message_id)
    assert sent.provider == "outbox"
    assert sent.provider_message_id == mail["Message-ID"]
    assert sent.accepted == ["ada.fernsby@example.com"]


def test_marketing_email_carries_one_click_unsubscribe_headers(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    send_message(ledger, staff, email_to(ada, category="marketing"))

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    [mail] = mail_in(tmp_path)
    links = mail["List-Unsubscribe"]
    assert links.startswith("<https://brightside.example/unsubscribe/")
    assert "<mailto:unsubscribe+" in links
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_attachments_are_read_from_the_blob_store_into_the_email(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    invoice = AttachmentUpload(name="invoice.pdf", content=b"%PDF-1.4 invoice")
    send_message(ledger, staff, email_to(ada, attachments=[invoice]))

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    [mail] = mail_in(tmp_path)
    [part] = [p for p in mail.walk() if p.get_filename() == "invoice.pdf"]
    assert part.get_content_type() == "application/pdf"
    assert part.get_payload(decode=True) == b"%PDF-1.4 invoice"


def test_queued_sms_is_appended_to_the_outbox_and_recorded_as_sent(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(
        ledger, staff, SendMessage(customer_id=ada, channel="sms", body="Hi Ada")
    )

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    [line] = (tmp_path / "sms.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["to"] == "+12015550111"
    assert record["from"] == "+12015550100"
    assert record["body"] == "Hi Ada"
    assert record["id"] == f"{receipt.message_id}.1"
    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.status == Status.SENT


def test_recipient_suppressed_after_queueing_is_not_contacted(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    suppress(
        ledger,
        staff,
        Suppress(
            channel="email", address="ada.fernsby@example.com", reason="asked by phone"
        ),
    )

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.status == Status.FAILED
    [failed] = [
        e for e in ledger.events.get(message.id) if isinstance(e, Message.Failed)
    ]
    assert failed.permanent
    assert "suppressed" in failed.reason and "asked by phone" in failed.reason
    assert not (tmp_path / "mail").exists() or mail_in(tmp_path) == []


def test_missing_attachment_fails_its_message_and_the_rest_still_go_out(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    invoice = AttachmentUpload(name="invoice.pdf", content=b"%PDF-1.4 lost")
    broken = send_message(ledger, staff, email_to(ada, attachments=[invoice]))
    fine = send_message(ledger, staff, email_to(ada))
    for blob in (tmp_path / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()

    report = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    failed = get_message(ledger, staff, str(broken.message_id))
    assert failed.status == Status.FAILED
    [event] = [e for e in ledger.events.get(failed.id) if isinstance(e, Message.Failed)]
    assert "invoice.pdf" in event.reason
    assert get_message(ledger, staff, str(fine.message_id)).status == Status.SENT
    assert (report.sent, report.failed) == (1, 1)


def test_running_the_dispatcher_again_sends_nothing_twice(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    for _ in range(3):
        send_message(ledger, staff, email_to(ada))
    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    again = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    assert again.notifications == 0
    assert len(mail_in(tmp_path)) == 3


def test_a_batch_read_twice_records_each_attempt_once(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    first = dispatcher_for(ledger, tmp_path)
    batch = first.next_batch()
    assert batch is not None
    asyncio.run(first.drain())

    # The same notifications met again, as after a crash before the commit.
    for job in batch.jobs:
        job.outcome = asyncio.run(first.send(job))
    first.record(batch)

    assert len(sent_events(ledger, receipt.message_id)) == 1


def test_retried_message_is_sent_as_a_numbered_new_attempt(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    suppress(
        ledger,
        staff,
        Suppress(channel="email", address="ada.fernsby@example.com", reason="typo"),
    )
    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    unsuppress(
        ledger,
        staff,
        Unsuppress(channel="email", address="ada.fernsby@example.com", reason="fixed"),
    )
    retry_message(ledger, staff, RetryMessage(message_id=str(receipt.message_id)))
    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.status == Status.SENT
    assert message.attempts[1].status == Status.FAILED
    assert message.attempts[2].status == Status.SENT
    [mail] = mail_in(tmp_path)
    assert parse_message_id_header(mail["Message-ID"]) == (receipt.message_id, 2)


def test_retried_bounce_is_sent_again_as_attempt_two(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    asyncio.run(dispatcher_for(ledger, tmp_path).drain())
    [first] = mail_in(tmp_path)
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(receipt.message_id),
            outcome="bounced",
            provider="sendgrid",
            provider_event_id="sg-bounce-1",
            provider_message_id=first["Message-ID"],
            recipient="ada.fernsby@example.com",
            status_code="5.2.2",
            reason="mailbox full",
        ),
    )
    bounced = get_message(ledger, staff, str(receipt.message_id))
    assert bounced.status == Status.BOUNCED

    retried = retry_message(
        ledger, staff, RetryMessage(message_id=str(receipt.message_id))
    )
    report = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    message = get_message(ledger, staff, str(receipt.message_id))
    assert retried.attempt == 2 and report.sent == 1
    assert message.status == Status.SENT
    assert message.attempts[1].status == Status.BOUNCED
    assert message.attempts[2].status == Status.SENT
    mail_ids = sorted(
        parse_message_id_header(m["Message-ID"]) for m in mail_in(tmp_path)
    )
    assert mail_ids == [(receipt.message_id, 1), (receipt.message_id, 2)]
    assert len(sent_events(ledger, receipt.message_id)) == 2


def test_dispatchers_of_two_partitions_share_the_messages_between_them(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    ids = [send_message(ledger, staff, email_to(ada)).message_id for _ in range(6)]
    halves = [Partition(0, 2), Partition(1, 2)]

    for half in halves:
        dispatcher = dispatcher_for(ledger, tmp_path)
        dispatcher.partition = half
        asyncio.run(dispatcher.drain())

    mail_ids = sorted(
        parse_message_id_header(m["Message-ID"]) for m in mail_in(tmp_path)
    )
    assert mail_ids == sorted((i, 1) for i in ids)


def test_resend_queues_a_linked_copy_to_the_customers_current_address(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    invoice = AttachmentUpload(name="invoice.pdf", content=b"%PDF-1.4 invoice")
    original = send_message(
        ledger, staff, email_to(ada, html="<p>See you</p>", attachments=[invoice])
    )
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id=ada, name="Ada Fernsby", email="ada@fernsby.example.org"
        ),
    )

    receipt = resend_message(ledger, staff, str(original.message_id))

    copy = get_message(ledger, staff, str(receipt.message_id))
    first = get_message(ledger, staff, str(original.message_id))
    assert copy.id != first.id
    assert copy.resend_of == str(first.id)
    assert copy.to == ["ada@fernsby.example.org"]
    assert (copy.subject, copy.text, copy.html) == (
        first.subject,
        first.text,
        first.html,
    )
    assert copy.attachments == first.attachments
    assert copy.status == Status.QUEUED


def test_resending_a_received_message_is_refused_and_appends_nothing(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    inbound = record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel="email",
            sender="ada.fernsby@example.com",
            subject="Question",
            body="Can I come at 11?",
        ),
    )
    queued = get_topic(Message.Queued)
    before = len(ledger.recorder.select_notifications(1, 1000, topics=[queued]))

    with pytest.raises(InvalidTransition, match="only messages the company sent"):
        resend_message(ledger, staff, str(inbound))

    after = len(ledger.recorder.select_notifications(1, 1000, topics=[queued]))
    assert after == before


def test_batch_that_meets_a_concurrent_write_still_records_its_outcomes(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    dispatcher = dispatcher_for(ledger, tmp_path)
    batch = dispatcher.next_batch()
    assert batch is not None
    for job in batch.jobs:
        job.outcome = asyncio.run(dispatcher.send(job))
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(receipt.message_id),
            outcome="delivered",
            provider="outbox",
            provider_event_id="early-report",
        ),
    )

    dispatcher.record(batch)

    events = list(ledger.events.get(receipt.message_id))
    assert [type(e).__name__ for e in events] == ["Queued", "Delivered", "Sent"]
    assert dispatcher.position() == batch.position
    assert asyncio.run(dispatcher.drain()).notifications == 0


def test_message_named_in_consecutive_batches_is_sent_once(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    first = send_message(ledger, staff, email_to(ada)).message_id
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(first), outcome="failed", provider="smtp", reason="greylist"
        ),
    )
    retry_message(ledger, staff, RetryMessage(message_id=str(first)))
    others = [send_message(ledger, staff, email_to(ada)).message_id for _ in range(3)]
    last = send_message(ledger, staff, email_to(ada)).message_id

    report = asyncio.run(dispatcher_for(ledger, tmp_path, batch_size=1).drain())

    mail_ids = sorted(
        parse_message_id_header(m["Message-ID"]) for m in mail_in(tmp_path)
    )
    expected = [(first, 2)] + [(i, 1) for i in [*others, last]]
    assert mail_ids == sorted(expected)
    assert report.sent == 5
    assert len(sent_events(ledger, first)) == 1


def test_suppression_in_a_batch_fails_only_the_suppressed_recipients_message(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(customer_id="c-ben", name="Ben Okafor", email=BEN),
    )
    to_ada = [send_message(ledger, staff, email_to(ada)).message_id for _ in range(3)]
    to_ben = send_message(ledger, staff, email_to("c-ben")).message_id
    suppress(ledger, staff, Suppress(channel="email", address=BEN, reason="bounced"))

    report = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    assert (report.sent, report.failed) == (3, 1)
    assert get_message(ledger, staff, str(to_ben)).status == Status.FAILED
    assert all(get_message(ledger, staff, str(i)).status == Status.SENT for i in to_ada)
    assert all(m["To"] == "ada.fernsby@example.com" for m in mail_in(tmp_path))


def test_a_batch_reads_its_messages_in_one_query_and_suppressions_in_another(
    ledger: Ledger,
    staff: Principal,
    ada: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(5):
        send_message(ledger, staff, email_to(ada, cc=[BEN]))
    recorder = ledger.recorder
    assert isinstance(recorder, BatchReader)
    batched: list[int] = []
    one_by_one: list[object] = []
    read_many, read_one = recorder.select_events_of, recorder.select_events

    def counting_many(
        ids: Sequence[uuid.UUID], after: Sequence[int] | None = None
    ) -> Sequence[StoredEvent]:
        batched.append(len(ids))
        return list(read_many(ids, after))

    def counting_one(*args: Any, **kwargs: Any) -> Sequence[StoredEvent]:
        one_by_one.append(args[0])
        return list(read_one(*args, **kwargs))

    monkeypatch.setattr(recorder, "select_events_of", counting_many)
    monkeypatch.setattr(recorder, "select_events", counting_one)

    batch = dispatcher_for(ledger, tmp_path).next_batch()

    assert batch is not None and len(batch.jobs) == 5
    assert all(job.outgoing is not None for job in batch.jobs)
    assert batched == [5, 2]  # five messages; the two addresses they name
    assert one_by_one == []


def test_messages_decoded_from_their_notifications_equal_a_full_read(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    sent = [send_message(ledger, staff, email_to(ada)) for _ in range(2)]
    failed = send_message(ledger, staff, email_to(ada, cc=[BEN]))
    email = Channel.EMAIL
    suppress(ledger, staff, Suppress(channel=email, address=BEN, reason="typo"))
    asyncio.run(dispatcher_for(ledger, tmp_path).drain())
    unsuppress(ledger, staff, Unsuppress(channel=email, address=BEN, reason="ok"))
    retry_message(ledger, staff, RetryMessage(message_id=str(failed.message_id)))

    # From the start of the log: every Queued is among the notifications, and
    # the later events (Sent, Failed, Retried) must be read from the store.
    batch = dispatcher_for(ledger, tmp_path).next_batch(after=0)

    assert batch is not None
    [job] = batch.jobs
    assert job.message.id == failed.message_id and job.attempt == 2
    assert vars(job.message) == vars(ledger.repository.get(failed.message_id))
    assert not {r.message_id for r in sent} & {j.message.id for j in batch.jobs}


class StoreFailsOnce(Dispatcher):
    """A dispatcher whose first batch meets a failing event store."""

    failed = False

    async def dispatch_batch(self) -> DispatchReport | None:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("The event store could not be read; try again.")
        return await super().dispatch_batch()


def test_worker_goes_on_after_the_store_fails_for_a_batch(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    dispatcher = StoreFailsOnce(
        ledger,
        MaildirOutbox(tmp_path / "mail"),
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
    )

    async def run() -> DispatchReport:
        return await serve(dispatcher, asyncio.Event(), 0.01, once=True)

    report = asyncio.run(run())

    assert dispatcher.failed and report.sent == 1
    assert get_message(ledger, staff, str(receipt.message_id)).status == Status.SENT


class RetriedWhileSending(MaildirOutbox):
    """An outbox that, while it writes the first email, lets a webhook fail the
    message and staff retry it, then lets the dispatcher's look-ahead read on."""

    def __init__(self, directory: Path, ledger: Ledger, staff: Principal) -> None:
        super().__init__(directory)
        self.ledger, self.staff = ledger, staff
        self.interleaved = threading.Event()

    async def send_email(self, email: OutgoingEmail) -> SendOutcome:
        if not self.interleaved.is_set():
            message_id = str(email.message_id)
            record_delivery_event(
                self.ledger,
                self.staff,
                RecordDeliveryEvent(
                    message_id=message_id,
                    outcome="failed",
                    provider="sendgrid",
                    provider_event_id="sg-dropped-1",
                    reason="dropped",
                ),
            )
            retry_message(self.ledger, self.staff, RetryMessage(message_id=message_id))
            self.interleaved.set()
        return await super().send_email(email)


class LooksAheadLate(Dispatcher):
    """A dispatcher whose look-ahead load waits until the outbox says so."""

    def __init__(self, *args: Any, interleaved: threading.Event, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.interleaved = interleaved

    def next_batch(
        self, after: int | None = None, in_flight: Mapping[uuid.UUID, int] | None = None
    ) -> Batch | None:
        if after is not None:
            self.interleaved.wait(timeout=10)
        return super().next_batch(after, in_flight)


def test_retry_recorded_while_the_first_attempt_is_in_flight_is_still_sent(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    receipt = send_message(ledger, staff, email_to(ada))
    outbox = RetriedWhileSending(tmp_path / "mail", ledger, staff)
    dispatcher = LooksAheadLate(
        ledger,
        outbox,
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
        DispatchPolicy(batch_size=1, first_backoff=0.0),
        interleaved=outbox.interleaved,
    )

    asyncio.run(dispatcher.drain())

    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.current_attempt == 2
    assert message.status == Status.SENT
    mail_ids = sorted(
        parse_message_id_header(m["Message-ID"]) for m in mail_in(tmp_path)
    )
    assert mail_ids == [(receipt.message_id, 1), (receipt.message_id, 2)]
    assert asyncio.run(dispatcher_for(ledger, tmp_path).drain()).notifications == 0


def queue_as_written_earlier(
    ledger: Ledger, staff: Principal, customer_id: str, **fields: object
) -> uuid.UUID:
    """A Queued event written straight to the store, as an earlier version of
    the ledger might have written it, with fields today's send rules refuse."""
    message_id = uuid.uuid4()
    values: dict[str, object] = {
        "tenant_id": staff.tenant_id,
        "customer_id": customer_id,
        "occurred_at": now(),
        "direction": "outbound",
        "channel": "email",
        "category": "transactional",
        "sender": "office@brightside.example",
        "to": ["ada.fernsby@example.com"],
        "cc": [],
        "bcc": [],
        "subject": "Your appointment on Tuesday",
        "text": "See you at 10:00.",
        "html": None,
        "template_id": None,
        "template_version": None,
        "merge_values": {},
        "attachments": [],
        "sent_by": {"user_id": staff.user_id, "trigger": None},
        "idempotency_key": None,
        "fingerprint": "",
        "sms_encoding": None,
        "sms_segments": None,
        "resend_of": None,
        **fields,
    }
    ledger.commit([Creation(Message.queue(message_id, **values))])
    return message_id


def failure_of(ledger: Ledger, message_id: uuid.UUID) -> Message.Failed:
    [failed] = [
        e for e in ledger.events.get(message_id) if isinstance(e, Message.Failed)
    ]
    return failed


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_message_queued_without_a_recipient_fails_saying_so(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path, channel: str
) -> None:
    nobody = queue_as_written_earlier(ledger, staff, ada, channel=channel, to=[])
    fine = send_message(ledger, staff, email_to(ada)).message_id

    report = asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    failed = failure_of(ledger, nobody)
    assert failed.permanent
    assert failed.reason == f"Message {nobody} has no recipient; resend it to someone."
    assert get_message(ledger, staff, str(fine)).status == Status.SENT
    assert (report.sent, report.failed) == (1, 1)


def test_address_that_no_longer_passes_the_rules_fails_its_message(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    stale = queue_as_written_earlier(ledger, staff, ada, cc=["ada@fernsby..example"])
    fine = send_message(ledger, staff, email_to(ada)).message_id

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    failed = failure_of(ledger, stale)
    assert failed.permanent
    assert "'ada@fernsby..example' is not a valid email address" in failed.reason
    assert get_message(ledger, staff, str(fine)).status == Status.SENT
    assert [m["To"] for m in mail_in(tmp_path)] == ["ada.fernsby@example.com"]


@pytest.mark.parametrize(
    ("fields", "exception"),
    [
        ({"to": [42]}, "AttributeError"),
        ({"channel": "fax"}, "ValueError"),
        ({"sender": None}, "AttributeError"),
    ],
)
def test_message_that_cannot_be_prepared_fails_naming_the_fault_and_the_rest_go_out(
    ledger: Ledger,
    staff: Principal,
    ada: str,
    tmp_path: Path,
    fields: dict[str, object],
    exception: str,
) -> None:
    before = send_message(ledger, staff, email_to(ada)).message_id
    poison = queue_as_written_earlier(ledger, staff, ada, **fields)
    after = send_message(ledger, staff, email_to(ada)).message_id
    dispatcher = Dispatcher(
        ledger,
        MaildirOutbox(tmp_path / "mail"),
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
        DispatchPolicy(first_backoff=0.0),
    )

    report = asyncio.run(dispatcher.drain())

    failed = failure_of(ledger, poison)
    assert failed.permanent
    assert failed.reason.startswith("The message could not be prepared for sending")
    assert exception in failed.reason
    assert exception in failed.detail["exception"]
    for fine in (before, after):
        assert get_message(ledger, staff, str(fine)).status == Status.SENT
    assert (report.sent, report.failed) == (2, 1)


def test_message_whose_events_cannot_be_read_is_passed_over_and_the_rest_go_out(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    unreadable = queue_as_written_earlier(
        ledger, staff, ada, attachments=["invoice.pdf"]
    )
    fine = send_message(ledger, staff, email_to(ada)).message_id
    dispatcher = dispatcher_for(ledger, tmp_path)

    report = asyncio.run(dispatcher.drain())

    assert (report.sent, report.failed) == (1, 0)
    assert get_message(ledger, staff, str(fine)).status == Status.SENT
    assert [type(e) for e in ledger.events.get(unreadable)] == [Message.Queued]
    assert asyncio.run(dispatcher.drain()).notifications == 0


class RaisesOnOne(MaildirOutbox):
    """An outbox with a fault: writing one particular message raises."""

    def __init__(self, directory: Path, broken: uuid.UUID) -> None:
        super().__init__(directory)
        self.broken = broken
        self.tries = 0

    async def send_email(self, email: OutgoingEmail) -> SendOutcome:
        if email.message_id == self.broken:
            self.tries += 1
            raise RuntimeError("socket closed mid-write")
        return await super().send_email(email)


def test_provider_that_raises_fails_only_that_message_after_its_tries(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> None:
    before = send_message(ledger, staff, email_to(ada)).message_id
    broken = send_message(ledger, staff, email_to(ada)).message_id
    after = send_message(ledger, staff, email_to(ada)).message_id
    outbox = RaisesOnOne(tmp_path / "mail", broken)
    dispatcher = Dispatcher(
        ledger,
        outbox,
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
        DispatchPolicy(max_tries=3, first_backoff=0.0),
    )

    report = asyncio.run(dispatcher.drain())

    assert outbox.tries == 3
    failed = failure_of(ledger, broken)
    assert not failed.permanent
    assert failed.provider == "outbox"
    assert failed.reason.startswith(
        "The provider raised RuntimeError: socket closed mid-write"
    )
    assert "unknown whether the last of 3 tries was delivered" in failed.reason
    assert failed.detail == {"exception": "RuntimeError('socket closed mid-write')"}
    for fine in (before, after):
        assert get_message(ledger, staff, str(fine)).status == Status.SENT
    assert (report.sent, report.failed) == (2, 1)
