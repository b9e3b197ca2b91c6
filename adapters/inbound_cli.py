"""Command-line entries for inbound mail and provider settings.

`ledger import-email FILE.eml --customer ID` files a customer's email saved
from a teammate's own inbox; `ledger worker inbound-smtp` runs the listener;
`ledger provider-settings` records how the company's webhooks are verified;
`ledger worker provider-links` applies parked provider reports as soon as the
dispatcher records the send, without waiting for the next webhook; `ledger
unmatched list|file` shows and files inbound messages nobody was found for.
"""

from __future__ import annotations

import getpass
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from adapters.inbound_mail import import_email
from adapters.inbound_smtp import ListenerOptions, serve_until_stopped
from adapters.terminal import CompanyOption, UserOption, err, out
from adapters.wiring import Settings, build_ledger
from commands.models import invalid_command
from commands.threading import file_unmatched, unmatched_inbound
from commands.tracking import (
    ConfigureProviderSettings,
    SentLinker,
    configure_provider_settings,
)
from ledger.errors import LedgerError
from ledger.provider_settings import DEFAULT_HELP_TEXT
from ledger.values import Permission, Principal

logger = logging.getLogger(__name__)


def acting(company: str, user: str | None) -> Principal:
    """The principal the command line acts as."""
    name = user or getpass.getuser()
    return Principal(company, name, frozenset(Permission), name)


def reply_secret(settings: Settings) -> bytes | None:
    """LEDGER_REPLY_SECRET as bytes, if set."""
    return settings.reply_secret.encode() if settings.reply_secret else None


def fail(message: str) -> typer.Exit:
    """Print one sentence on stderr and give the exit to raise."""
    err.print(f"[bold red]Error:[/] {message}", highlight=False)
    return typer.Exit(1)


def import_email_command(
    file: Annotated[Path, typer.Argument(help="The saved email (.eml).")],
    customer: Annotated[str, typer.Option("--customer", help="Whose email it is.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """File a customer's email that landed in your own inbox."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise fail(f"Cannot read {file}: {exc.strerror}.") from None
    settings = Settings.from_env()
    try:
        ledger = build_ledger(settings)
        try:
            receipt = import_email(
                ledger, acting(company, user), raw, customer, reply_secret(settings)
            )
        finally:
            ledger.close()
    except LedgerError as exc:
        raise fail(exc.message) from None
    answered = f", answering {receipt.answers}" if receipt.answers else ""
    out.print(
        f"Recorded message {receipt.message_id} from customer "
        f"[bold]{receipt.customer_id}[/]{answered}.",
        highlight=False,
    )


def inbound_smtp_command(
    company: CompanyOption = "demo",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 2525,
) -> None:
    """Receive replies, bounces and forwards by SMTP for one company."""
    settings = Settings.from_env()
    try:
        ledger = build_ledger(settings)
    except LedgerError as exc:
        raise fail(exc.message) from None
    options = ListenerOptions(company, host, port, reply_secret(settings))
    try:
        serve_until_stopped(ledger, options)
    finally:
        ledger.close()


unmatched_app = typer.Typer(
    help="Inbound messages no customer could be found for.", no_args_is_help=True
)


@unmatched_app.command("list")
def unmatched_list(company: CompanyOption = "demo", user: UserOption = None) -> None:
    """List the company's unmatched inbound messages, newest first."""
    try:
        ledger = build_ledger(Settings.from_env())
        try:
            found = unmatched_inbound(ledger, acting(company, user))
        finally:
            ledger.close()
    except LedgerError as exc:
        raise fail(exc.message) from None
    if not found:
        out.print("No unmatched messages.")
    for kept in found:
        subject = kept.subject or (kept.text.strip().splitlines() or [""])[0][:60]
        out.print(
            f"{kept.id}  {kept.occurred_at:%Y-%m-%d %H:%M}  {kept.channel:<5}  "
            f"{kept.sender}  {subject}",
            highlight=False,
            markup=False,
        )


@unmatched_app.command("file")
def unmatched_file(
    unmatched_id: Annotated[str, typer.Argument(help="Id from `unmatched list`.")],
    customer: Annotated[str, typer.Option("--customer", help="Whose message it is.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """File an unmatched message under a customer."""
    try:
        ledger = build_ledger(Settings.from_env())
        try:
            message_id = file_unmatched(
                ledger, acting(company, user), unmatched_id, customer
            )
        finally:
            ledger.close()
    except LedgerError as exc:
        raise fail(exc.message) from None
    out.print(f"Filed as message {message_id} of customer [bold]{customer}[/].")


def provider_links_command(
    interval: Annotated[
        float, typer.Option(help="Seconds between passes over new Sent events.")
    ] = 2.0,
    once: Annotated[bool, typer.Option(help="Make one pass, then stop.")] = False,
) -> None:
    """Link providers' message ids to messages and apply the reports parked for them."""
    try:
        ledger = build_ledger(Settings.from_env())
    except LedgerError as exc:
        raise fail(exc.message) from None
    linker = SentLinker(ledger)
    try:
        while True:
            linked = linker.catch_up()
            if linked:
                logger.info("linked %d provider message ids", linked)
            if once:
                out.print(f"Linked {linked} provider message ids.")
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        ledger.close()


def provider_settings_command(
    company: CompanyOption = "demo",
    user: UserOption = None,
    sendgrid_public_key: Annotated[
        str | None, typer.Option(help="SendGrid's webhook verification key.")
    ] = None,
    twilio_auth_token: Annotated[
        str | None, typer.Option(help="Twilio auth token for webhook signatures.")
    ] = None,
    help_text: Annotated[str, typer.Option(help="Answer to HELP.")] = DEFAULT_HELP_TEXT,
    open_tracking: Annotated[
        bool, typer.Option(help="Record opens from the tracking pixel.")
    ] = False,
    import_address: Annotated[
        str | None, typer.Option(help="Where teammates forward customers' email.")
    ] = None,
    inbound_token: Annotated[
        str | None, typer.Option(help="Token the inbound-email hook must send.")
    ] = None,
) -> None:
    """Record how the company's provider webhooks are verified."""
    try:
        command = ConfigureProviderSettings(
            sendgrid_public_key=sendgrid_public_key,
            twilio_auth_token=twilio_auth_token,
            sms_help_text=help_text,
            open_tracking=open_tracking,
            import_address=import_address,
            inbound_token=inbound_token,
        )
    except ValidationError as exc:
        raise fail(invalid_command(exc).message) from None
    try:
        ledger = build_ledger(Settings.from_env())
        try:
            configure_provider_settings(ledger, acting(company, user), command)
        finally:
            ledger.close()
    except LedgerError as exc:
        raise fail(exc.message) from None
    out.print(f"Provider settings of [bold]{company}[/] are recorded.")
