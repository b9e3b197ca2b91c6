"""`ledger automations …` and `ledger worker broker`.

adapters.cli mounts `automations` as a sub-app and registers `broker_command`
on the shared `worker` sub-app.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from adapters.broker.settings import BrokerSettings, consumer_kind
from adapters.broker.worker import serve
from adapters.terminal import CompanyOption, UserOption, fail, out
from adapters.wiring import Settings, build_ledger
from commands.application import Ledger
from commands.automation import (
    MapTrigger,
    UnmapTrigger,
    map_trigger,
    trigger_routes,
    unmap_trigger,
)
from commands.models import invalid_command
from ledger.automation import Trigger
from ledger.errors import LedgerError
from ledger.values import Channel, Permission, Principal

T = TypeVar("T")

automations = typer.Typer(
    help="Automated messages: which template each trigger sends.",
    no_args_is_help=True,
)

TriggerArgument = Annotated[Trigger, typer.Argument(help="The trigger event.")]


def operator(company: str, user: str | None) -> Principal:
    name = user or getpass.getuser()
    return Principal(company, name, frozenset(Permission), name)


def on_ledger(action: Callable[[Ledger], T]) -> T:
    """Run `action` on the configured ledger; our errors become one sentence."""
    try:
        ledger = build_ledger(Settings.from_env())
        try:
            return action(ledger)
        finally:
            ledger.close()
    except ValidationError as exc:
        fail(invalid_command(exc).message)
    except LedgerError as exc:
        fail(exc.message)


@automations.command("set")
def automations_set(
    trigger: TriggerArgument,
    template: Annotated[str, typer.Option(help="Template id to send.")],
    channel: Annotated[
        Channel | None, typer.Option(help="email or sms; default: the template's.")
    ] = None,
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Send a template whenever TRIGGER arrives from the broker."""
    command = MapTrigger(trigger=trigger, template_id=template, channel=channel)
    route = on_ledger(lambda lg: map_trigger(lg, operator(company, user), command))
    out.print(
        f"[bold]{route.trigger}[/] now sends template [bold]{route.template_id}[/] "
        f"by {route.channel}."
    )


@automations.command("unset")
def automations_unset(
    trigger: TriggerArgument,
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Stop TRIGGER sending anything."""
    command = UnmapTrigger(trigger=trigger)
    was_mapped = on_ledger(
        lambda lg: unmap_trigger(lg, operator(company, user), command)
    )
    if was_mapped:
        out.print(f"[bold]{trigger.value}[/] no longer sends anything.")
    else:
        out.print(f"[bold]{trigger.value}[/] was not mapped; nothing changed.")


@automations.command("list")
def automations_list(
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The company's mapped triggers."""
    routes = on_ledger(lambda lg: trigger_routes(lg, operator(company, user)))
    if as_json:
        out.print_json(json.dumps([route.__dict__ for route in routes]))
        return
    if not routes:
        out.print("No trigger is mapped; map one with `ledger automations set`.")
    for route in routes:
        out.print(f"{route.trigger}: {route.template_id} by {route.channel}")


def broker_command(
    nats_url: Annotated[
        str, typer.Option("--nats", envvar="LEDGER_NATS_URL", help="NATS server.")
    ] = BrokerSettings.servers,
    root: Annotated[
        str, typer.Option(envvar="LEDGER_BROKER_ROOT", help="Subject root.")
    ] = BrokerSettings.root,
    stream: Annotated[
        str, typer.Option(envvar="LEDGER_BROKER_STREAM", help="Stream name prefix.")
    ] = BrokerSettings.stream_prefix,
    consumer: Annotated[
        str,
        typer.Option(
            envvar="LEDGER_BROKER_CONSUMER",
            help="pull (batched, the default) or push (faststream subscribers).",
        ),
    ] = BrokerSettings.consumer,
    batch_size: Annotated[
        int, typer.Option(min=1, max=4096, help="Deliveries taken at once.")
    ] = BrokerSettings.batch_size,
    max_deliveries: Annotated[
        int, typer.Option(min=1, max=100, help="Tries before dead-lettering.")
    ] = BrokerSettings.max_deliveries,
    pullers: Annotated[
        int,
        typer.Option(
            min=1, max=32, help="Batches fetched and in flight at once, per consumer."
        ),
    ] = BrokerSettings.pullers,
    status: Annotated[
        bool,
        typer.Option(
            help="Publish status changes. When several workers share the intake, "
            "let one of them publish (--no-status on the others)."
        ),
    ] = True,
) -> None:
    """Take commands and trigger events from NATS; publish status changes."""

    def run(ledger: Ledger) -> None:
        settings = BrokerSettings(
            servers=nats_url,
            root=root,
            stream_prefix=stream,
            consumer=consumer_kind(consumer),
            batch_size=batch_size,
            max_deliveries=max_deliveries,
            pullers=pullers,
        )
        asyncio.run(serve(ledger, settings, publish_status=status))

    on_ledger(run)
