"""Embedded default providers: a Maildir for email and a JSON-lines file for SMS.

With no mail or SMS service configured, the dispatcher "sends" into
`$LEDGER_OUTBOX_DIR` (default `var/outbox`): `mail/` is a Maildir that any mail
client can open, `sms.jsonl` holds one JSON object per text. Nothing leaves the
machine, and the ledger records the attempts as Sent just the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mailbox
import os
from datetime import UTC, datetime
from pathlib import Path

from adapters.smtp import compose_email
from commands.ports import OutcomeKind, OutgoingEmail, OutgoingSms, SendOutcome

logger = logging.getLogger(__name__)


class MaildirOutbox:
    """Writes each email into a Maildir instead of sending it."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send_email(self, email: OutgoingEmail) -> SendOutcome:
        """Store the composed message in the Maildir's `new/` folder."""
        try:
            message = compose_email(email, with_bcc=True).replace(b"\r\n", b"\n")
        except (ValueError, TypeError) as exc:
            return SendOutcome(
                OutcomeKind.PERMANENT,
                self.name,
                f"The email could not be composed: {exc}.",
            )
        key = await asyncio.to_thread(self.store, message)
        return SendOutcome(
            OutcomeKind.ACCEPTED,
            self.name,
            provider_message_id=email.message_id_header,
            accepted=email.recipients,
            detail={"maildir": str(self.directory), "key": key},
        )

    def store(self, message: bytes) -> str:
        # Concurrent sends share one Maildir; creating it is not atomic in the
        # standard library, so the folders are made here, idempotently.
        for folder in ("tmp", "new", "cur"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
        maildir = mailbox.Maildir(self.directory, create=False)
        key = maildir.add(message)
        logger.info("wrote email %s to the outbox %s", key, self.directory)
        return key

    async def close(self) -> None:
        return None


class JsonLinesSmsOutbox:
    """Appends each text as one JSON line instead of sending it."""

    name = "outbox"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send_sms(self, sms: OutgoingSms) -> SendOutcome:
        """Append the text to the outbox file."""
        record = {
            "id": sms.idempotency_key,
            "message_id": str(sms.message_id),
            "attempt": sms.attempt,
            "from": sms.sender,
            "to": sms.to,
            "body": sms.body,
            "written_at": datetime.now(UTC).isoformat(),
        }
        await asyncio.to_thread(self.append, json.dumps(record, ensure_ascii=False))
        return SendOutcome(
            OutcomeKind.ACCEPTED,
            self.name,
            provider_message_id=f"outbox-{sms.idempotency_key}",
            accepted=(sms.to,),
            detail={"path": str(self.path)},
        )

    def append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write on an O_APPEND descriptor, so concurrent writers never
        # interleave parts of two lines.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (line + "\n").encode())
        finally:
            os.close(descriptor)
        logger.info("wrote a text to the outbox %s", self.path)

    async def close(self) -> None:
        return None
