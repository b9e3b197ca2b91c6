"""The inbound SMTP listener, driven by a real SMTP client over a real socket."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from adapters.inbound_smtp import ListenerOptions, start_listener
from commands.application import Ledger
from commands.delivery import get_message
from ledger.values import Principal, Status
from tests.integration.tracking_support import (
    REPLY_SECRET,
    mail_fixture,
    queue_email,
    sqlite_only,
    store_position,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def listener(ledger: Ledger, company: None) -> Iterator[int]:
    options = ListenerOptions("brightside", "127.0.0.1", free_port(), REPLY_SECRET)
    controller = start_listener(ledger, options)
    yield options.port
    controller.stop()


def deliver(port: int, sender: str, recipient: str, raw: bytes) -> None:
    """Send as an MTA does: lines end in CRLF on the wire."""
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, [recipient], wire)


def test_a_reply_sent_to_the_listener_is_recorded_before_it_says_250(
    ledger: Ledger, staff: Principal, ada: str, listener: int
) -> None:
    sent = queue_email(ledger, staff, ada)
    raw = mail_fixture("gmail_reply.eml", message_id=str(sent))

    deliver(listener, "ada.fernsby@example.com", "office@brightside.example", raw)

    assert len(get_message(ledger, staff, str(sent)).replies) == 1


def test_a_bounce_sent_to_the_listener_marks_the_original_bounced(
    ledger: Ledger, staff: Principal, ada: str, listener: int
) -> None:
    sent = queue_email(ledger, staff, ada, to="old.address@example.net")
    raw = mail_fixture("postfix_bounce.eml", message_id=str(sent))

    deliver(listener, "", "office@brightside.example", raw)

    assert get_message(ledger, staff, str(sent)).status == Status.BOUNCED


def test_a_teammates_forward_to_the_import_address_records_the_original(
    ledger: Ledger, staff: Principal, ada: str, listener: int
) -> None:
    sent = queue_email(ledger, staff, ada)
    raw = mail_fixture("forward_attached.eml", message_id=str(sent))

    deliver(
        listener, "maria.lopez@brightside.example", "import@brightside.example", raw
    )

    [reply_id] = get_message(ledger, staff, str(sent)).replies
    reply = get_message(ledger, staff, reply_id)
    assert reply.sender == "ada.fernsby@example.com"
    assert reply.sent_by["user_id"] == "maria.lopez@brightside.example"


@sqlite_only
def test_a_stranger_cannot_use_the_import_address(
    ledger: Ledger, staff: Principal, ada: str, listener: int
) -> None:
    sent = queue_email(ledger, staff, ada)
    raw = mail_fixture("forward_attached.eml", message_id=str(sent))
    before = store_position(ledger)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        deliver(listener, "eve@rival.example", "import@brightside.example", raw)

    assert refused.value.smtp_code == 550
    assert store_position(ledger) == before


@sqlite_only
def test_mail_that_is_not_a_message_is_refused_for_good(
    ledger: Ledger, listener: int
) -> None:
    before = store_position(ledger)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        deliver(listener, "a@example.org", "office@brightside.example", b"hello\r\n")

    assert refused.value.smtp_code == 550
    assert store_position(ledger) == before


def test_import_email_on_the_command_line_files_the_email_for_the_customer(
    ledger: Ledger, ledger_url: str, staff: Principal, ada: str, tmp_path: Path
) -> None:
    sent = queue_email(ledger, staff, ada)
    eml = tmp_path / "reply.eml"
    eml.write_bytes(mail_fixture("outlook_reply.eml"))
    env = {"LEDGER_DATABASE_URL": ledger_url, "LEDGER_BLOB_DIR": str(tmp_path / "b")}

    result = CliRunner().invoke(
        app,
        [
            *("import-email", str(eml), "--customer", ada),
            *("--company", "brightside", "--user", "sam.front-desk"),
        ],
        env=env,
    )

    assert result.exit_code == 0, result.output
    assert f"answering {sent}" in result.output
    [reply_id] = get_message(ledger, staff, str(sent)).replies
    assert get_message(ledger, staff, reply_id).sent_by["user_id"] == "sam.front-desk"


def test_import_email_reports_a_missing_file_in_one_sentence(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["import-email", str(tmp_path / "nope.eml"), "--customer", "c-ada"]
    )

    assert result.exit_code == 1
    assert "Cannot read" in result.output


def test_the_unmatched_list_is_shown_and_filed_on_the_command_line(
    ledger: Ledger, ledger_url: str, staff: Principal, ada: str, listener: int
) -> None:
    raw = mail_fixture("unknown_sender.eml")
    deliver(listener, "sam.visitor@example.org", "office@brightside.example", raw)
    env = {"LEDGER_DATABASE_URL": ledger_url}
    who = ["--company", "brightside", "--user", "maria.lopez"]

    listed = CliRunner().invoke(app, ["unmatched", "list", *who], env=env)
    unmatched_id = listed.output.split()[0]
    filed = CliRunner().invoke(
        app, ["unmatched", "file", unmatched_id, "--customer", ada, *who], env=env
    )
    after = CliRunner().invoke(app, ["unmatched", "list", *who], env=env)

    assert "sam.visitor@example.org  Do you take new patients?" in listed.output
    assert filed.exit_code == 0, filed.output
    assert "No unmatched messages." in after.output
