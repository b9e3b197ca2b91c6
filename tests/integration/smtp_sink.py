"""A real aiosmtpd server for the tests, whose answers each test can script."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    """A port nobody listens on now (aiosmtpd cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Received:
    """One message the server accepted, with its envelope."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    peer: Any


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it receives and answers as scripted.

    `rcpt_answers[address]` is a list of replies given to RCPT for that address,
    one per try (any 2xx lets it through); `mail_answers` likewise for MAIL;
    `drop_data` is how many DATA commands to answer by closing the connection
    after the message arrived. `data_delay` holds up every DATA before its
    message is kept; `late_answers` are seconds to wait, one per DATA, before
    answering a message already kept, as a server that queued it and then
    stalls (a client that gives up meanwhile leaves it delivered).
    """

    rcpt_answers: dict[str, list[str]] = field(default_factory=dict)
    mail_answers: list[str] = field(default_factory=list)
    knows_ehlo: bool = True
    drop_data: int = 0
    data_delay: float = 0.0
    late_answers: list[float] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if self.knows_ehlo:
            # With this hook defined, aiosmtpd leaves recording the greeting to it.
            session.host_name = hostname
            return responses
        return ["502 5.5.1 EHLO not implemented; say HELO"]

    async def handle_MAIL(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_answers:
            answer = self.mail_answers.pop(0)
            if not answer.startswith("2"):
                return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        answers = self.rcpt_answers.get(address)
        if answers:
            answer = answers.pop(0)
            if not answer.startswith("2"):
                return answer
            envelope.rcpt_tos.append(address)
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        sender = str(envelope.mail_from)
        recipients = list(envelope.rcpt_tos)
        self.received.append(Received(sender, recipients, message, session.peer))
        if self.drop_data:
            self.drop_data -= 1
            server.transport.close()
        if self.late_answers:
            await asyncio.sleep(self.late_answers.pop(0))
        return "250 2.0.0 Ok: queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and data.password == b"s3cret-pass":
            self.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    @property
    def message_ids(self) -> list[str]:
        return [r.message["Message-ID"] for r in self.received]


@dataclass
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""

    ca: trustme.CA
    server_context: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def make_tls() -> TlsFiles:
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    return TlsFiles(ca, server_context)


@contextmanager
def smtp_server(
    sink: Sink,
    *,
    tls: TlsFiles | None = None,
    implicit: bool = False,
    auth: bool = False,
    size_limit: int | None = None,
) -> Iterator[int]:
    """Run aiosmtpd on a free port in a thread for the block; yields the port."""
    port = free_port()
    options: dict[str, Any] = {}
    if tls is not None and implicit:
        options["ssl_context"] = tls.server_context
    elif tls is not None:
        options["tls_context"] = tls.server_context
        options["require_starttls"] = True
    if auth:
        options["authenticator"] = sink.authenticate
        options["auth_require_tls"] = True
    if size_limit is not None:
        options["data_size_limit"] = size_limit
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
