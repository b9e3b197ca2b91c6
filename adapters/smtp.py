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
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from commands.ports import OutcomeKind, OutgoingEmail, SendOutcome
from ledger.errors import LedgerError

logger = logging.getLogger(__name__)

TlsMode = Literal["starttls", "implicit", "none"]
DEFAULT_PORTS: dict[TlsMode, int] = {"starttls": 587, "implicit": 465, "none": 25}
SMTP_OK = 250
SERVICE_CLOSING = 421
# RFC 5321 §3.4: 251 "user not local; will forward" accepts the recipient too.
RCPT_ACCEPTED = frozenset({250, 251})
# RFC 5322 §2.1.1: header lines of at most 78 characters, as the library folds.
FOLD_AT = 78
LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# RFC 5322 §3.6.4: a msg-id of dot-atoms, the form the ledger's Message-IDs take.
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"<{ATOM}(?:\.{ATOM})*@{ATOM}(?:\.{ATOM})*>")


class HeaderClasses(HeaderRegistry):
    """The standard header registry, each class made once, recent headers reused.

    The library's registry makes a new class every time it parses a header,
    about a third of the CPU an email took to compose (see "Delivery" in
    docs/performance.md); the classes it makes for one name are all alike.
    Parsing the header was most of the rest, and most headers the library
    sets are the same in every email (`Content-Type: text/plain;
    charset="utf-8"`, `MIME-Version: 1.0`); a header object is a value no
    one changes, so one made from the same name and value serves again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, type[BaseHeader]] = {}
        self.parsed = lru_cache(maxsize=64)(super().__call__)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self.made.get(key)
        if made is None:
            made = self.made[key] = super().__getitem__(name)
        return made

    def __call__(self, name: str, value: str) -> BaseHeader:
        return self.parsed(name, value)


# SMTP's CRLF and 78-column folding; 7bit makes the library pick quoted-printable
# or base64 for any body that is not plain ASCII, since `transact` does not ask
# the server for 8BITMIME. Headers stored with `set_raw` are written as given.
MIME_POLICY = policy.SMTP.clone(
    cte_type="7bit", refold_source="none", header_factory=HeaderClasses()
)


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

    Built with the standard library's EmailMessage: the text, the HTML as its
    alternative, the attachments beside them (non-ASCII names as RFC 2231
    parameters). Bcc stays out of the bytes unless asked for (the outbox keeps
    it); the SMTP envelope carries those recipients. A header value with a
    line break in it, or a non-ASCII address, is refused with ValueError.
    """
    message = EmailMessage(policy=MIME_POLICY)
    # Addresses and links go in as written, folded between them. The library
    # would fold two addresses each too long for a line with an empty line
    # between them, which ends the headers there (CPython gh-142006), and a
    # long link into an RFC 2047 encoded word, which no client reads as a link.
    message.set_raw("From", address_list("From", [email.sender]))
    message.set_raw("To", address_list("To", email.to))
    if email.cc:
        message.set_raw("Cc", address_list("Cc", email.cc))
    if email.bcc and with_bcc:
        message.set_raw("Bcc", address_list("Bcc", email.bcc))
    set_text(message, "Subject", email.subject)
    message.set_raw("Date", format_datetime(datetime.now(UTC)))
    set_message_id(message, email.message_id_header)
    if email.reply_to:
        message.set_raw("Reply-To", address_list("Reply-To", [email.reply_to]))
    if email.list_unsubscribe:
        message.set_raw("List-Unsubscribe", unsubscribe_links(email.list_unsubscribe))
        if email.list_unsubscribe[0].startswith("https://"):
            message.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if email.automated:
        # RFC 3834: tells auto-responders not to answer a machine's message.
        message.set_raw("Auto-Submitted", "auto-generated")

    message.set_content(email.text)
    if email.html:
        message.make_alternative(boundary(email, "alternative"))
        message.add_alternative(email.html, subtype="html")
    if email.attachments:
        message.make_mixed(boundary(email, "mixed"))
    for attachment in email.attachments:
        maintype, subtype = media_type(attachment.media_type)
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=single_line(attachment.name),
        )
    return message.as_bytes()


def set_text(message: EmailMessage, name: str, value: str) -> None:
    """Sets an unstructured header, stored as written where the library writes it so.

    That is printable ASCII, not empty, with no encoded word, short enough for
    its line: stored so, it is not parsed when set nor parsed and folded again
    when the email is written. Any other value goes through the library, which
    encodes it in RFC 2047 words and folds it.
    """
    single_line(value)
    if (
        value.isascii()
        and value.isprintable()
        and value
        and "=?" not in value
        and len(name) + 2 + len(value) <= FOLD_AT
    ):
        message.set_raw(name, value)
    else:
        message[name] = value


def set_message_id(message: EmailMessage, value: str) -> None:
    """Sets the Message-ID, stored as written if it is one RFC 5322 msg-id.

    The library writes such an id as it is; any other value goes through the
    library, which keeps the msg-id it can read in it.
    """
    single_line(value)
    if MSG_ID.fullmatch(value) and len("Message-ID: ") + len(value) <= FOLD_AT:
        message.set_raw("Message-ID", value)
    else:
        message["Message-ID"] = value


def boundary(email: OutgoingEmail, subtype: str) -> str | None:
    """The boundary of this attempt's multipart of that subtype, made once.

    Left to itself the library draws a random boundary while writing the
    email, parsing Content-Type again to set it. Quoted-printable and base64
    never write "=_", so only a body sent as it is could hold the boundary;
    if one does, None lets the library draw one that is in no part.
    """
    value = f"=_{subtype}.{email.message_id.hex}.{email.attempt}"
    line = f"--{value}"
    if line in email.text or (email.html and line in email.html):
        return None
    return value


def media_type(declared: str) -> tuple[str, str]:
    """The type and subtype an attachment's bytes go out as.

    A multipart or message type would need its content parsed into parts, and
    the library writes such bytes unencoded, so those go as octet-stream.
    """
    maintype, _, subtype = single_line(declared).partition("/")
    if not maintype or maintype.lower() in ("multipart", "message"):
        return "application", "octet-stream"
    return maintype, subtype or "octet-stream"


def address_list(name: str, addresses: Sequence[str]) -> str:
    """The value of an address header, refused if an address is not ASCII."""
    for address in addresses:
        if not address.isascii():
            raise ValueError(
                f"{address} is not an ASCII address; this SMTP provider does not "
                "send SMTPUTF8 mail"
            )
        single_line(address)
    return folded(name, addresses)


def unsubscribe_links(links: Sequence[str]) -> str:
    """The List-Unsubscribe value (RFC 2369): each link in angle brackets."""
    for link in links:
        if not link.isascii():
            raise ValueError(f"{link} is not an ASCII link; percent-encode it")
        single_line(link)
    return folded("List-Unsubscribe", [f"<{link}>" for link in links])


def folded(name: str, items: Sequence[str]) -> str:
    """The items separated by commas, one a line if together they pass 78 columns."""
    joined = ", ".join(items)
    if len(name) + 2 + len(joined) <= FOLD_AT:
        return joined
    return ",\r\n ".join(items)


def single_line(value: str) -> str:
    """The value, refused if a line break in it could forge a header.

    Every character `str.splitlines` breaks at counts, as the standard
    library's header checks do.
    """
    if LINE_BREAK.search(value):
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
