"""The email provider on SMTP (aiosmtplib), over a small pool of open connections.

Configured by one URL, `smtp://user:password@host:port?tls=starttls`, where
`tls` is `starttls` (the default), `implicit` (TLS from the first byte, usually
port 465) or `none`; `pool` sets how many connections stay open (default 4),
`timeout` the seconds to wait for the server (default 30) and `cafile` a CA
bundle to trust besides the system's.

How SMTP answers map to outcomes: 2xx accepted (with any per-recipient
refusals kept); 4xx transient (421 "closing" at any step included); 5xx
permanent; a connection that cannot be made is transient; a connection lost or
a timeout once the transaction has begun is an unknown outcome, since the
server may have queued the message already.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiosmtplib

from commands.ports import OutcomeKind, OutgoingAttachment, OutgoingEmail, SendOutcome
from ledger.errors import LedgerError

logger = logging.getLogger(__name__)

TlsMode = Literal["starttls", "implicit", "none"]
DEFAULT_PORTS: dict[TlsMode, int] = {"starttls": 587, "implicit": 465, "none": 25}
SMTP_OK = 250
SERVICE_CLOSING = 421
# RFC 5321 §3.4: 251 "user not local; will forward" accepts the recipient too.
RCPT_ACCEPTED = frozenset({250, 251})


class BadSmtpUrl(LedgerError):
    """Raised when LEDGER_SMTP_URL cannot be understood."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    tls: TlsMode = "starttls"
    username: str | None = None
    password: str | None = None
    pool_size: int = 4
    timeout: float = 30.0
    cafile: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """Settings from `smtp://user:password@host:port?tls=…&pool=…`."""
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        tls = query.get("tls", "starttls")
        if parts.scheme != "smtp" or not parts.hostname:
            raise BadSmtpUrl(
                f"LEDGER_SMTP_URL '{redacted(url)}' is not smtp://host:port; "
                "write it as smtp://user:password@host:port?tls=starttls."
            )
        if tls not in DEFAULT_PORTS:
            raise BadSmtpUrl(
                f"LEDGER_SMTP_URL asks for tls={tls}; use starttls, implicit or none."
            )
        mode: TlsMode = tls
        try:
            return cls(
                host=parts.hostname,
                port=parts.port or DEFAULT_PORTS[mode],
                tls=mode,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                pool_size=int(query.get("pool", "4")),
                timeout=float(query.get("timeout", "30")),
                cafile=query.get("cafile"),
            )
        except ValueError as exc:
            raise BadSmtpUrl(
                f"LEDGER_SMTP_URL '{redacted(url)}' has a bad number ({exc}); "
                "give the port, pool and timeout as numbers."
            ) from exc


def redacted(url: str) -> str:
    """The URL with its password replaced, for error messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def compose_email(email: OutgoingEmail, *, with_bcc: bool = False) -> bytes:
    """The MIME message for one attempt, as the bytes that go over the wire.

    Written out directly rather than through the standard library's message
    classes, which spent more time per message than everything else the
    dispatcher does (see "Delivery" in docs/performance.md); the tests read
    the result back with the standard library's parser. Bodies are base64, so
    the boundary's "=_" can never occur inside a part. Bcc stays out of the
    bytes unless asked for (the outbox keeps it); the SMTP envelope carries
    those recipients.
    """
    boundary = f"=_{email.message_id.hex}.{email.attempt}"
    lines = [
        f"From: {address_list([email.sender])}",
        f"To: {address_list(email.to)}",
    ]
    if email.cc:
        lines.append(f"Cc: {address_list(email.cc)}")
    if email.bcc and with_bcc:
        lines.append(f"Bcc: {address_list(email.bcc)}")
    lines += [
        f"Subject: {header_text(email.subject)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {single_line(email.message_id_header)}",
        "MIME-Version: 1.0",
    ]
    if email.reply_to:
        lines.append(f"Reply-To: {address_list([email.reply_to])}")
    if email.list_unsubscribe:
        links = ", ".join(f"<{single_line(link)}>" for link in email.list_unsubscribe)
        lines.append(f"List-Unsubscribe: {links}")
        if email.list_unsubscribe[0].startswith("https://"):
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if email.automated:
        # RFC 3834: tells auto-responders not to answer a machine's message.
        lines.append("Auto-Submitted: auto-generated")

    body = text_part("plain", email.text)
    if email.html:
        body = multipart(
            "alternative", f"{boundary}a", [body, text_part("html", email.html)]
        )
    if email.attachments:
        parts = [body] + [attachment_part(a) for a in email.attachments]
        body = multipart("mixed", f"{boundary}m", parts)
    return "\r\n".join(lines).encode("ascii") + b"\r\n" + body


def text_part(subtype: str, text: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + base64_lines(text.encode("utf-8"))


def attachment_part(attachment: OutgoingAttachment) -> bytes:
    maintype, _, subtype = attachment.media_type.partition("/")
    media_type = single_line(f"{maintype or 'application'}/{subtype or 'octet-stream'}")
    if attachment.name.isascii():
        quoted = attachment.name.replace("\\", "\\\\").replace('"', '\\"')
        filename = f'filename="{single_line(quoted)}"'
    else:
        # RFC 2231: a parameter value in another charset, percent-encoded.
        filename = f"filename*=utf-8''{quote(attachment.name, safe='')}"
    return (
        f"Content-Type: {media_type}\r\n"
        f"Content-Disposition: attachment; {filename}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + base64_lines(attachment.content)


def multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    separator = f"\r\n--{boundary}\r\n".encode()
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
        + separator
        + separator.join(parts)
        + f"\r\n--{boundary}--\r\n".encode()
    )


def base64_lines(content: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ended by CRLF."""
    return base64.encodebytes(content).replace(b"\n", b"\r\n")


def address_list(addresses: Sequence[str]) -> str:
    """Addresses for a header, folded between addresses when the list is long."""
    for address in addresses:
        if not address.isascii():
            raise ValueError(
                f"{address} is not an ASCII address; this SMTP provider does not "
                "send SMTPUTF8 mail"
            )
        single_line(address)
    joined = ", ".join(addresses)
    return joined if len(joined) < 900 else ",\r\n ".join(addresses)


def header_text(value: str) -> str:
    """Plain ASCII as it is; anything else as RFC 2047 encoded words."""
    single_line(value)
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def single_line(value: str) -> str:
    """The value, refused if a line break in it could forge a header."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value contains a line break: {value!r}")
    return value


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of one email: the addresses as they go on the wire."""

    sender: bytes
    recipients: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, email: OutgoingEmail) -> Envelope:
        if not email.recipients:
            raise ValueError("the email has no recipient")
        return cls(
            envelope_address(email.sender),
            tuple((a, envelope_address(a)) for a in email.recipients),
        )


def envelope_address(address: str) -> bytes:
    """The address for MAIL FROM or RCPT TO, refused if it could alter the command.

    A space, an angle bracket or a control character would let an address add
    parameters or commands of its own.
    """
    if not address.isascii() or not address.isprintable():
        raise ValueError(
            f"{address!r} is not a printable ASCII address; this SMTP provider "
            "does not send SMTPUTF8 mail"
        )
    if any(c in address for c in " <>") or "@" not in address:
        raise ValueError(f"{address!r} is not an address the envelope can carry")
    return address.encode("ascii")


class SmtpProvider:
    """Sends email over a pool of SMTP connections, reconnecting as needed."""

    name = "smtp"

    def __init__(
        self, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.tls_context = tls_context or self.default_tls_context()
        self._idle: asyncio.Queue[aiosmtplib.SMTP | None] | None = None

    def default_tls_context(self) -> ssl.SSLContext | None:
        if self.settings.tls == "none":
            return None
        return ssl.create_default_context(cafile=self.settings.cafile)

    @property
    def idle(self) -> asyncio.Queue[aiosmtplib.SMTP | None]:
        # Made on first use so that it belongs to the running event loop.
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.settings.pool_size):
                self._idle.put_nowait(None)
        return self._idle

    async def send_email(self, email: OutgoingEmail) -> SendOutcome:
        """One try at handing the email to the server."""
        try:
            message = compose_email(email)
            envelope = Envelope.of(email)
        except (ValueError, TypeError) as exc:
            return self.outcome(
                OutcomeKind.PERMANENT, f"The email could not be composed: {exc}."
            )

        client = await self.idle.get()
        if client is not None and not client.is_connected:
            # The server hung up while the connection sat idle.
            client.close()
            client = None
        try:
            client = client or await self.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.idle.put(None)
            return self.refusal(exc, began=False)

        try:
            refused, response = await self.transact(client, envelope, message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The session's state is unclear after any error: start afresh.
            client.close()
            await self.idle.put(None)
            return self.refusal(exc, began=True)
        await self.idle.put(client)
        return self.accepted(email, refused, response)

    async def transact(
        self, client: aiosmtplib.SMTP, envelope: Envelope, message: bytes
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """MAIL, one RCPT per recipient and DATA, on a connection that said EHLO.

        What `aiosmtplib.SMTP.sendmail` does, driven through its protocol
        object: sendmail parses every address again with `email.utils` and
        wraps each command in its own locks and checks, which cost the
        dispatcher more CPU than the rest of its work on an email (see
        "Delivery" in docs/performance.md). The addresses were checked when
        the envelope was made. Errors are aiosmtplib's own exceptions, so
        `refusal` reads them the same way; the caller drops the connection
        after any of them instead of saying RSET.
        """
        protocol = client.protocol
        if protocol is None or not client.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("The connection was closed.")
        timeout = self.settings.timeout
        mail_from = b"FROM:<" + envelope.sender + b">"
        if client.supports_extension("size"):
            mail_from += b" SIZE=%d" % len(message)
        response = await protocol.execute_command(b"MAIL", mail_from, timeout=timeout)
        if response.code != SMTP_OK:
            raise aiosmtplib.SMTPSenderRefused(
                response.code, response.message, envelope.sender.decode()
            )
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        for address, quoted in envelope.recipients:
            response = await protocol.execute_command(
                b"RCPT", b"TO:<" + quoted + b">", timeout=timeout
            )
            if response.code == SERVICE_CLOSING:
                # The server is hanging up: no transaction, whatever came before.
                raise aiosmtplib.SMTPResponseException(response.code, response.message)
            if response.code not in RCPT_ACCEPTED:
                refused[address] = response
        if len(refused) == len(envelope.recipients):
            raise aiosmtplib.SMTPRecipientsRefused(
                [
                    aiosmtplib.SMTPRecipientRefused(r.code, r.message, address)
                    for address, r in refused.items()
                ]
            )
        response = await protocol.execute_data_command(message, timeout=timeout)
        return refused, response.message

    async def connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            use_tls=settings.tls == "implicit",
            start_tls=settings.tls == "starttls",
            tls_context=self.tls_context,
            timeout=settings.timeout,
        )
        try:
            await client.connect()
            await self.greet(client)
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            raise
        logger.info("connected to SMTP server %s:%s", settings.host, settings.port)
        return client

    async def greet(self, client: aiosmtplib.SMTP) -> None:
        """EHLO, or HELO from a server that knows no EHLO, unless done already.

        aiosmtplib greets during `connect` only when it needs the extensions
        for STARTTLS or AUTH; `transact` needs them for SIZE.
        """
        if not client.is_ehlo_or_helo_needed:
            return
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()

    def accepted(
        self,
        email: OutgoingEmail,
        refused: dict[str, aiosmtplib.SMTPResponse],
        response: str,
    ) -> SendOutcome:
        refusals = {address: f"{r.code} {r.message}" for address, r in refused.items()}
        return SendOutcome(
            OutcomeKind.ACCEPTED,
            self.name,
            provider_message_id=email.message_id_header,
            accepted=tuple(a for a in email.recipients if a not in refused),
            refused=refusals,
            detail={"response": response, "refused": refusals},
        )

    def refusal(self, exc: Exception, *, began: bool) -> SendOutcome:
        """The outcome an SMTP error means, with the server's words kept."""
        detail: dict[str, Any] = {"error": type(exc).__name__, "response": str(exc)}
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            refused = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
            detail.update(response="\n".join(refused.values()), refused=refused)
            permanent = all(r.code >= 500 for r in exc.recipients)
            kind = OutcomeKind.PERMANENT if permanent else OutcomeKind.TRANSIENT
            reason = "The server refused every recipient: " + "; ".join(
                f"{address} {answer}" for address, answer in refused.items()
            )
            return SendOutcome(kind, self.name, reason, refused=refused, detail=detail)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            detail.update(code=exc.code, response=exc.message)
            kind = OutcomeKind.PERMANENT if exc.code >= 500 else OutcomeKind.TRANSIENT
            return self.outcome(
                kind, f"The server answered {exc.code} {exc.message}", detail
            )
        if began and not isinstance(exc, aiosmtplib.SMTPConnectError):
            return self.outcome(
                OutcomeKind.UNKNOWN,
                f"The connection to the SMTP server was lost mid-send ({exc}).",
                detail,
            )
        return self.outcome(
            OutcomeKind.TRANSIENT,
            f"Could not reach the SMTP server {self.settings.host}:"
            f"{self.settings.port} ({exc}).",
            detail,
        )

    def outcome(
        self, kind: OutcomeKind, reason: str, detail: dict[str, Any] | None = None
    ) -> SendOutcome:
        return SendOutcome(kind, self.name, reason, detail=dict(detail or {}))

    async def close(self) -> None:
        """Say QUIT on every idle connection."""
        if self._idle is None:
            return
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client is None:
                continue
            try:
                if client.is_connected:
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                logger.info("SMTP connection was already gone at QUIT")
            finally:
                client.close()
