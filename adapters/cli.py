"""The `ledger` command line: typer for the commands, rich for the output.

Every command acts for one company (`--company`, default from LEDGER_COMPANY,
else `demo`) as one user (`--user`, default LEDGER_USER, else the login name),
holding both permissions: the command line is an operator's tool. Mistakes are
reported as one sentence on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich import box
from rich.table import Table

from adapters import presenting
from adapters.access_cli import tokens_app, users_app
from adapters.broker.cli import automations, broker_command
from adapters.demo import seed_demo
from adapters.inbound_cli import (
    import_email_command,
    inbound_smtp_command,
    provider_links_command,
    provider_settings_command,
    unmatched_app,
)
from adapters.projection_cli import (
    in_utc,
    projections_app,
    replay,
    report,
    timeline_page,
)
from adapters.serve_cli import serve_command
from adapters.terminal import CompanyOption, JsonOption, UserOption, fail, out
from adapters.wiring import Settings, build_ledger
from adapters.workers import workers
from commands.application import Ledger
from commands.delivery import retry_message
from commands.directory import register_company, upsert_customer
from commands.history import message_history
from commands.models import (
    AttachmentUpload,
    MergeValue,
    RegisterCompany,
    RetryMessage,
    SaveTemplate,
    SendMessage,
    Suppress,
    Unsuppress,
    UpsertCustomer,
    invalid_command,
)
from commands.resend import resend_message
from commands.send import preview_message, send_message
from commands.suppressions import suppress, unsuppress
from commands.templates import save_template
from ledger.addresses import split_addresses
from ledger.errors import LedgerError
from ledger.sms import count_segments
from ledger.values import Channel, Direction, Permission, Principal, Status
from projections.database import ViewDatabase, open_views
from projections.reading import TimelineFilter

T = TypeVar("T")

app = typer.Typer(
    help="The message ledger: every email and SMS exchanged with customers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
companies = typer.Typer(help="Set up the company (tenant).", no_args_is_help=True)
customers = typer.Typer(help="The customer directory.", no_args_is_help=True)
templates = typer.Typer(help="Message templates.", no_args_is_help=True)
app.add_typer(companies, name="companies")
app.add_typer(customers, name="customers")
app.add_typer(templates, name="templates")
app.add_typer(projections_app, name="projections")
app.add_typer(workers, name="worker")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.command("serve")(serve_command)
app.command("replay")(replay)
app.command("report")(report)
app.command("import-email")(import_email_command)
app.command("provider-settings")(provider_settings_command)
workers.command("inbound-smtp")(inbound_smtp_command)
workers.command("provider-links")(provider_links_command)
app.add_typer(unmatched_app, name="unmatched")
workers.command("broker")(broker_command)
app.add_typer(automations, name="automations")


def principal_for(company: str, user: str | None) -> Principal:
    return Principal(
        tenant_id=company,
        user_id=user or getpass.getuser(),
        permissions=frozenset(Permission),
        display_name=user or getpass.getuser(),
    )


@contextmanager
def opened_ledger() -> Iterator[Ledger]:
    ledger = build_ledger(Settings.from_env())
    try:
        yield ledger
    finally:
        ledger.close()


def run(action: Callable[[Ledger], T]) -> T:
    """Run `action` on the ledger, turning our errors into one clear sentence."""
    try:
        with opened_ledger() as ledger:
            return action(ledger)
    except ValidationError as exc:
        fail(invalid_command(exc).message)
    except LedgerError as exc:
        fail(exc.message)


def with_views(ledger: Ledger, action: Callable[[ViewDatabase], T]) -> T:
    views = open_views(ledger.env)
    try:
        return action(views)
    finally:
        views.close()


def emit_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


@companies.command("add")
def companies_add(
    company: CompanyOption = "demo",
    user: UserOption = None,
    name: Annotated[str, typer.Option(help="The company's name.")] = "",
    email_from: Annotated[str | None, typer.Option(help="Email sender.")] = None,
    sms_from: Annotated[str | None, typer.Option(help="SMS sender number.")] = None,
    region: Annotated[str, typer.Option(help="Default phone region.")] = "US",
) -> None:
    """Set up the company, or change its settings."""
    command = RegisterCompany(
        name=name or company,
        email_sender=email_from,
        sms_sender=sms_from,
        default_region=region,
    )
    result = run(lambda lg: register_company(lg, principal_for(company, user), command))
    out.print(f"Company [bold]{company}[/] is set up: {result.name}.")


@customers.command("add")
def customers_add(
    customer_id: Annotated[str, typer.Argument(help="Your id for the customer.")],
    name: Annotated[str, typer.Option(help="Full name.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
    customer_type: Annotated[str, typer.Option("--type")] = "individual",
    email: Annotated[str | None, typer.Option(help="Primary email.")] = None,
    phone: Annotated[str | None, typer.Option(help="Cell phone.")] = None,
) -> None:
    """Add a customer, or update their details."""
    result = run(
        lambda lg: upsert_customer(
            lg,
            principal_for(company, user),
            parse_cli(
                lambda: UpsertCustomer(
                    customer_id=customer_id,
                    name=name,
                    customer_type=customer_type,
                    email=email,
                    cell_phone=phone,
                )
            ),
        )
    )
    out.print(f"Customer [bold]{result.customer_id}[/] saved: {result.name}.")


@templates.command("add")
def templates_add(
    template_id: Annotated[str, typer.Argument(help="Template id.")],
    channel: Annotated[Channel, typer.Option(help="email or sms.")],
    body: Annotated[str | None, typer.Option(help="Text body.")] = None,
    body_file: Annotated[Path | None, typer.Option(help="Read body from file.")] = None,
    subject: Annotated[str | None, typer.Option(help="Email subject.")] = None,
    html_file: Annotated[Path | None, typer.Option(help="HTML body file.")] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Save a new version of a template."""
    text = body if body is not None else read_text(body_file, "--body")
    html = read_text(html_file, "--html-file") if html_file else None
    command = parse_cli(
        lambda: SaveTemplate(
            template_id=template_id,
            channel=channel,
            subject=subject,
            body=text,
            html=html,
            description=description,
        )
    )
    version = run(lambda lg: save_template(lg, principal_for(company, user), command))
    out.print(f"Template [bold]{template_id}[/] saved as version {version.number}.")


def send_command(
    customer_id: str,
    channel: Channel,
    to: str | None,
    cc: str | None,
    bcc: str | None,
    subject: str | None,
    body: str | None,
    template: str | None,
    version: int | None,
    merge: list[str] | None,
    attach: list[Path] | None,
    idempotency_key: str | None,
) -> SendMessage:
    values: dict[str, MergeValue] = {}
    for pair in merge or []:
        name, equals, value = pair.partition("=")
        if not equals:
            fail(f"--merge '{pair}' is not NAME=VALUE; write it as name=value.")
        values[name.strip()] = value
    uploads = [read_attachment(path) for path in attach or []]
    return parse_cli(
        lambda: SendMessage(
            customer_id=customer_id,
            channel=channel,
            to=to,
            cc=split_addresses(cc),
            bcc=split_addresses(bcc),
            subject=subject,
            body=body,
            template_id=template,
            template_version=version,
            merge_values=values,
            attachments=uploads,
            idempotency_key=idempotency_key,
        )
    )


ChannelOption = Annotated[Channel, typer.Option(help="email or sms.")]
ToOption = Annotated[str | None, typer.Option(help="Override the recipient.")]
CcOption = Annotated[str | None, typer.Option(help="Comma-separated CC (email).")]
BccOption = Annotated[str | None, typer.Option(help="Comma-separated BCC (email).")]
SubjectOption = Annotated[str | None, typer.Option(help="Subject (email).")]
BodyOption = Annotated[str | None, typer.Option(help="Text body.")]
TemplateOption = Annotated[str | None, typer.Option(help="Template id.")]
VersionOption = Annotated[int | None, typer.Option(help="Template version.")]
MergeOption = Annotated[
    list[str] | None, typer.Option(help="Merge value NAME=VALUE (repeatable).")
]
AttachOption = Annotated[
    list[Path] | None, typer.Option(help="File to attach (repeatable).")
]
KeyOption = Annotated[str | None, typer.Option(help="Idempotency key.")]


@app.command()
def send(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    channel: ChannelOption,
    to: ToOption = None,
    cc: CcOption = None,
    bcc: BccOption = None,
    subject: SubjectOption = None,
    body: BodyOption = None,
    template: TemplateOption = None,
    version: VersionOption = None,
    merge: MergeOption = None,
    attach: AttachOption = None,
    idempotency_key: KeyOption = None,
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a message to a customer and queue it for sending."""
    command = send_command(
        customer_id,
        channel,
        to,
        cc,
        bcc,
        subject,
        body,
        template,
        version,
        merge,
        attach,
        idempotency_key,
    )
    receipt = run(lambda lg: send_message(lg, principal_for(company, user), command))
    if as_json:
        emit_json(presenting.receipt_json(receipt))
        return
    verb = "Queued" if receipt.created else "Already recorded"
    out.print(f"{verb}: message [bold]{receipt.message_id}[/] ({receipt.status}).")


@app.command()
def preview(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    channel: ChannelOption,
    to: ToOption = None,
    cc: CcOption = None,
    bcc: BccOption = None,
    subject: SubjectOption = None,
    body: BodyOption = None,
    template: TemplateOption = None,
    version: VersionOption = None,
    merge: MergeOption = None,
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """Render a message and count its SMS segments; nothing is sent or stored."""
    command = send_command(
        customer_id,
        channel,
        to,
        cc,
        bcc,
        subject,
        body,
        template,
        version,
        merge,
        None,
        None,
    )
    draft = run(lambda lg: preview_message(lg, principal_for(company, user), command))
    shown = presenting.draft_json(draft)
    if draft.channel == Channel.SMS:
        count = count_segments(draft.text)
        shown["sms"] = {
            "encoding": count.encoding,
            "segments": count.segments,
            "units": count.units,
        }
    if as_json:
        emit_json(shown)
        return
    for key, value in shown.items():
        if value not in (None, [], {}):
            out.print(f"[bold]{key}:[/] {value}", highlight=False)


@app.command()
def messages(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: JsonOption = False,
    channel: Annotated[Channel | None, typer.Option(help="email or sms.")] = None,
    direction: Annotated[
        Direction | None, typer.Option(help="outbound or inbound.")
    ] = None,
    status: Annotated[Status | None, typer.Option(help="Current status.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Occurred at or after (UTC if no zone).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Occurred at or before (UTC if no zone).")
    ] = None,
    sent_by: Annotated[
        str | None, typer.Option(help="User id, System or Customer.")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Template id.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Words in subject, body or addresses.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Messages per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="next_cursor of the previous page.")
    ] = None,
) -> None:
    """A customer's messages, newest first, from the timeline view."""
    filters = TimelineFilter(
        channel=channel,
        direction=direction,
        status=status,
        since=in_utc(since),
        until=in_utc(until),
        sent_by=sent_by,
        template=template,
        search=search,
        limit=limit,
        after=after,
    )
    page = run(
        lambda lg: with_views(
            lg,
            lambda views: timeline_page(
                lg, views, principal_for(company, user), customer_id, filters
            ),
        )
    )
    rows = page.rows
    if as_json:
        emit_json(
            {
                "customer_id": customer_id,
                "count": page.count,
                "messages": rows,
                "next_cursor": page.next_cursor,
            }
        )
        return
    table = Table(
        title=f"Messages ({page.count})",
        title_justify="left",
        caption=page.next_cursor and f"More: --after {page.next_cursor}",
        box=box.SIMPLE_HEAD,
        expand=True,
    )
    columns = presenting.columns_for(out.width)
    for column in columns:
        table.add_column(
            column.title,
            no_wrap=True,
            overflow="ellipsis",
            ratio=column.ratio,
            min_width=column.width,
        )
    for row in rows:
        table.add_row(*(column.text(row) for column in columns))
    out.print(table)


@app.command()
def show(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """One message in full, with its event history."""
    message, history = run(
        lambda lg: message_history(lg, principal_for(company, user), message_id)
    )
    detail = presenting.message_detail(message, history)
    if as_json:
        emit_json(detail)
        return
    for key, value in detail.items():
        if key not in {"history", "text", "html"}:
            out.print(f"[bold]{key}:[/] {value}", highlight=False)
    out.print("[bold]text:[/]")
    out.print(message.text, highlight=False, markup=False)
    table = Table(title="History", title_justify="left")
    for column in ("#", "event", "occurred", "recorded", "detail"):
        table.add_column(column)
    for item in detail["history"]:
        table.add_row(
            str(item["version"]),
            item["event"],
            presenting.short_time(item["occurred_at"]),
            presenting.short_time(item["recorded_at"]),
            presenting.event_summary(item["fields"]),
        )
    out.print(table)


@app.command()
def retry(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Start a new attempt at a failed or bounced message."""
    outcome = run(
        lambda lg: retry_message(
            lg, principal_for(company, user), RetryMessage(message_id=message_id)
        )
    )
    out.print(
        f"Message {outcome.message_id} will be sent again (attempt {outcome.attempt})."
    )


@app.command()
def resend(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Send an earlier message again as a new message, to the customer's address."""
    receipt = run(
        lambda lg: resend_message(lg, principal_for(company, user), message_id)
    )
    out.print(f"Queued message {receipt.message_id}, a resend of {message_id}.")


ScopeOption = Annotated[
    str,
    typer.Option(help="all (every message on the channel) or marketing (only)."),
]


@app.command("suppress")
def suppress_address(
    channel: Annotated[Channel, typer.Argument(help="email or sms.")],
    address: Annotated[str, typer.Argument(help="Email address or phone number.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    scope: ScopeOption = "all",
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Stop messages to an address on a channel: all of them, or marketing only."""
    command = parse_cli(
        lambda: Suppress.model_validate(
            {"channel": channel, "address": address, "reason": reason, "scope": scope}
        )
    )
    result = run(lambda lg: suppress(lg, principal_for(company, user), command))
    out.print(f"{result.address} is suppressed for {result.channel} ({result.scope}).")


@app.command("unsuppress")
def unsuppress_address(
    channel: Annotated[Channel, typer.Argument(help="email or sms.")],
    address: Annotated[str, typer.Argument(help="Email address or phone number.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    scope: ScopeOption = "all",
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Allow messages to a suppressed address again, in the scope it was stopped."""
    command = parse_cli(
        lambda: Unsuppress.model_validate(
            {"channel": channel, "address": address, "reason": reason, "scope": scope}
        )
    )
    result = run(lambda lg: unsuppress(lg, principal_for(company, user), command))
    out.print(f"{result.address} may be messaged by {result.channel} again.")


@app.command()
def demo(
    customer: Annotated[
        str, typer.Option(help="Whose messages to show afterwards.")
    ] = "c-1001",
) -> None:
    """Create the demo company with customers, templates and messages, then list one."""
    summary = run(seed_demo)
    out.print(
        f"Demo company [bold]demo[/]: {summary.customers} customers, "
        f"{summary.templates} templates, {summary.messages} messages."
    )
    messages(customer, company="demo", user="demo", as_json=False)


def parse_cli(build: Callable[[], T]) -> T:
    try:
        return build()
    except ValidationError as exc:
        fail(invalid_command(exc).message)


def read_text(path: Path | None, option: str) -> str:
    if path is None:
        fail(f"Give the body with {option} or --body-file.")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"Cannot read {path}: {exc.strerror}.")


def read_attachment(path: Path) -> AttachmentUpload:
    try:
        content = path.read_bytes()
    except OSError as exc:
        fail(f"Cannot attach {path}: {exc.strerror}.")
    return AttachmentUpload(name=path.name, content=content)


def main() -> None:
    logging.basicConfig(level=os.environ.get("LEDGER_LOG_LEVEL", "WARNING"))
    app(prog_name="ledger")


if __name__ == "__main__":
    main()
