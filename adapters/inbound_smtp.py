"""The inbound SMTP listener (aiosmtpd): replies, bounces and forwards by mail.

It serves one company. Every message it accepts is recorded before the
listener answers 250, so a crash or a store outage makes the sending server
try again (451) instead of losing the message; a message the ledger cannot
read is refused for good (550). Mail to the company's import address is a
teammate forwarding a customer's email: the forwarded original is recorded,
attributed to the teammate, and only senders on the company's own mail
domain may use it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from adapters.inbound_mail import accept_email
from commands.application import Ledger
from commands.tracking import settings_of
from ledger.directory import Company
from ledger.errors import InvalidCommand, LedgerError, StoreUnavailable

logger = logging.getLogger(__name__)

DEFAULT_IMPORT_LOCAL_PART = "import"


@dataclass(frozen=True)
class ListenerOptions:
    """Where the listener binds and whose mail it takes."""

    tenant_id: str
    host: str = "127.0.0.1"
    port: int = 2525
    reply_secret: bytes | None = None


class InboundMailHandler:
    """aiosmtpd hooks that record each message in the ledger before saying 250."""

    def __init__(self, ledger: Ledger, options: ListenerOptions) -> None:
        self.ledger = ledger
        self.options = options

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the message, then answer 250, 451 or 550."""
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        recipients = [str(address).lower() for address in envelope.rcpt_tos]
        sender = str(envelope.mail_from or "").lower()
        try:
            await asyncio.to_thread(self.record, raw, recipients, sender)
        except StoreUnavailable:
            logger.exception("inbound mail from the listener could not be stored")
            return "451 4.3.0 The ledger is unavailable; try again later"
        except InvalidCommand as exc:
            return f"550 5.6.0 {exc.message}"
        except LedgerError as exc:
            return f"550 5.7.1 {exc.message}"
        return "250 2.0.0 Recorded"

    def record(self, raw: bytes, recipients: list[str], sender: str) -> None:
        """Record one message for the listener's company."""
        tenant = self.options.tenant_id
        forwarded_by = None
        if self.import_address() in recipients:
            forwarded_by = self.check_teammate(sender)
        accept_email(
            self.ledger,
            tenant,
            raw,
            envelope_recipients=recipients,
            forwarded_by=forwarded_by,
            reply_secret=self.options.reply_secret,
        )
        logger.info("inbound mail for %s recorded from the listener", tenant)

    def company(self) -> Company:
        """The listener's company, which must have an email sender."""
        company = self.ledger.load(Company, Company.id_for(self.options.tenant_id))
        if company is None or not company.email_sender:
            raise LedgerError(
                f"Company '{self.options.tenant_id}' has no email sender; set one "
                "with `ledger companies add --email-from` before receiving mail."
            )
        return company

    def import_address(self) -> str:
        """Where teammates forward customers' email."""
        settings = settings_of(self.ledger, self.options.tenant_id)
        if settings is not None and settings.import_address:
            return settings.import_address
        domain = (self.company().email_sender or "").rpartition("@")[2]
        return f"{DEFAULT_IMPORT_LOCAL_PART}@{domain}"

    def check_teammate(self, sender: str) -> str:
        """The forwarding teammate, who must write from the company's domain."""
        domain = (self.company().email_sender or "").rpartition("@")[2].lower()
        if not sender.endswith("@" + domain):
            raise InvalidCommand(
                "mail_from",
                f"Only addresses at {domain} may forward to the import address; "
                "forward from your work address.",
            )
        return sender


def start_listener(ledger: Ledger, options: ListenerOptions) -> Controller:
    """Start listening in a background thread; stop it with `.stop()`."""
    controller = Controller(
        InboundMailHandler(ledger, options),
        hostname=options.host,
        port=options.port,
        data_size_limit=50 * 1024 * 1024,
    )
    controller.start()
    logger.info(
        "inbound smtp for %s listening on %s:%s",
        options.tenant_id,
        options.host,
        options.port,
    )
    return controller


def serve_until_stopped(ledger: Ledger, options: ListenerOptions) -> None:
    """Listen until SIGINT or SIGTERM."""
    controller = start_listener(ledger, options)
    stopped = asyncio.Event()

    async def wait() -> None:
        """Wait for SIGINT or SIGTERM."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()
        logger.info("inbound smtp for %s stopped", options.tenant_id)
