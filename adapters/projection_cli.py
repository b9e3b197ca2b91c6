"""Command line for the read side: projection status and rebuilds, replay, workers.

`ledger projections status|rebuild`, `ledger replay`, and `ledger worker
project NAME|all` (mounted by adapters.cli). The listing commands bring the
timeline up to date before they read it, so an embedded store with no worker
running still lists what was just recorded.
"""

from __future__ import annotations

import getpass
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from adapters.terminal import CompanyOption, JsonOption, UserOption, fail, out
from adapters.wiring import Settings, build_ledger
from commands.application import Ledger
from commands.replay import Replay, replay_customer
from ledger.errors import LedgerError
from ledger.values import Permission, Principal
from projections.catalog import PROJECTIONS, projection_named
from projections.database import ViewDatabase, open_views
from projections.reading import (
    TimelineFilter,
    TimelineIndex,
    TimelinePage,
    customer_timeline,
)
from projections.reporting import ReportPeriod, delivery_report, report_csv
from projections.runtime import (
    TRANSIENT_ERRORS,
    ProjectionRunner,
    projection_status,
    rebuild,
    skipped_events,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESTART_SECONDS = 5.0

projections_app = typer.Typer(
    help="The read models: their state, and rebuilding them.", no_args_is_help=True
)


def reader(company: str, user: str | None) -> Principal:
    """A principal that may read the company's messages."""
    name = user or getpass.getuser()
    return Principal(company, name, frozenset({Permission.VIEW}), name)


@contextmanager
def opened() -> Iterator[tuple[Ledger, ViewDatabase]]:
    """The configured ledger and its views' database, closed afterwards."""
    ledger = build_ledger(Settings.from_env())
    try:
        views = open_views(ledger.env)
        try:
            yield ledger, views
        finally:
            views.close()
    finally:
        ledger.close()


def run(action: Callable[[Ledger, ViewDatabase], T]) -> T:
    """Run `action` on the ledger and its views; our errors become one sentence."""
    try:
        with opened() as (ledger, views):
            return action(ledger, views)
    except LedgerError as exc:
        fail(exc.message)


def timeline_page(
    ledger: Ledger,
    views: ViewDatabase,
    principal: Principal,
    customer_id: str,
    filters: TimelineFilter,
) -> TimelinePage:
    """The customer's timeline page, after bringing the view up to date."""
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    return customer_timeline(ledger, views, principal, customer_id, filters)


@projections_app.command("status")
def status(as_json: JsonOption = False) -> None:
    """Each projection's position, lag behind the log, and skipped events."""

    def gather(ledger: Ledger, views: ViewDatabase) -> list[dict[str, Any]]:
        found = []
        for projection in PROJECTIONS.values():
            state = projection_status(ledger, views, projection)
            skipped = skipped_events(views, projection.name, state.generation)
            found.append(
                {
                    "name": state.name,
                    "generation": state.generation,
                    "position": state.position,
                    "head": state.head,
                    "lag": state.lag,
                    "rebuilding_at": state.rebuilding_at,
                    "skipped": [vars(s) for s in skipped],
                }
            )
        return found

    states = run(gather)
    if as_json:
        out.print_json(json.dumps(states))
        return
    table = Table(title="Projections", title_justify="left")
    for column in ("name", "generation", "position", "head", "lag", "skipped"):
        table.add_column(column)
    for state in states:
        generation = state["generation"]
        if state["rebuilding_at"] is not None:
            generation = f"{generation} (rebuild at {state['rebuilding_at']})"
        table.add_row(
            state["name"],
            "not built" if generation is None else str(generation),
            str(state["position"]),
            str(state["head"]),
            str(state["lag"]),
            str(len(state["skipped"])),
        )
    out.print(table)
    for state in states:
        for skip in state["skipped"]:
            out.print(
                f"{state['name']} skipped event {skip['position']} "
                f"({skip['topic']}, {skip['originator_id']}): {skip['error']}",
                highlight=False,
                markup=False,
            )


@projections_app.command("rebuild")
def rebuild_projection(
    name: Annotated[str, typer.Argument(help="Projection name.")],
) -> None:
    """Rebuild a projection from zero; the old view serves until the new one is in."""
    projection = run(lambda ledger, views: projection_named(name))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out) as progress:
        task = progress.add_task(f"rebuilding {name}", total=None)

        def advance(position: int, head: int) -> None:
            progress.update(task, completed=position, total=head)

        generation = run(
            lambda ledger, views: rebuild(ledger, views, projection, advance)
        )
    out.print(f"Projection [bold]{name}[/] now serves generation {generation}.")


def replay(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    as_of: Annotated[
        str, typer.Option("--as-of", help="ISO time with zone, e.g. 2026-03-01T17:00Z.")
    ],
    company: CompanyOption = "demo",
    user: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """A customer's messages as the ledger had recorded them at an instant."""
    try:
        instant = datetime.fromisoformat(as_of)
    except ValueError:
        fail(f"--as-of '{as_of}' is not an ISO time; write it as 2026-03-01T17:00Z.")
    result = run(
        lambda ledger, views: replay_customer(
            ledger,
            reader(company, user),
            customer_id,
            instant,
            TimelineIndex(views, ledger) if views_built(views) else None,
        )
    )
    shown = replay_json(result)
    if as_json:
        out.print_json(json.dumps(shown, default=str))
        return
    out.print(
        f"Customer [bold]{customer_id}[/] as recorded at {instant.isoformat()}: "
        f"{len(shown['messages'])} messages."
    )
    for message in shown["messages"]:
        out.print(
            f"\n[bold]{message['message_id']}[/] {message['direction']} "
            f"{message['channel']} — {message['status']}",
            highlight=False,
        )
        for event in message["events"]:
            out.print(
                f"  {event['version']:>3} {event['recorded_at']} {event['event']}",
                highlight=False,
            )


def report(
    name: Annotated[
        str, typer.Argument(help="templates, customer-types, funnel or daily.")
    ],
    since: Annotated[
        datetime | None, typer.Option(help="Occurred at or after (UTC if no zone).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Occurred at or before (UTC if no zone).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the CSV here instead of stdout.")
    ] = None,
    company: CompanyOption = "demo",
    user: UserOption = None,
) -> None:
    """Delivery and engagement counts and rates, as CSV."""
    period = ReportPeriod(since=in_utc(since), until=in_utc(until))

    def build(ledger: Ledger, views: ViewDatabase) -> list[dict[str, Any]]:
        ProjectionRunner(ledger, views, projection_named("reporting")).catch_up()
        return delivery_report(views, reader(company, user), name, period)

    text = report_csv(run(build))
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"Cannot write {output}: {exc.strerror}.")
    out.print(f"Report [bold]{name}[/] written to {output}.")


def in_utc(moment: datetime | None) -> datetime | None:
    """A time from the command line; one without a zone is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def views_built(views: ViewDatabase) -> bool:
    """Whether any projection has run on this store yet."""
    return views.table_exists("projection_generations")


def replay_json(result: Replay) -> dict[str, Any]:
    """A replay as plain values for --json."""
    return {
        "customer_id": result.customer_id,
        "as_of": result.as_of.isoformat(),
        "messages": [
            {
                "message_id": str(item.message.id),
                "time": item.message.occurred_at.isoformat(),
                "direction": item.message.direction.value,
                "channel": item.message.channel,
                "subject": item.message.subject,
                "status": item.message.status.value,
                "attempt": item.message.current_attempt,
                "replies": item.message.replies,
                "events": [
                    {
                        "version": event.version,
                        "event": event.event,
                        "recorded_at": event.recorded_at.isoformat(),
                        "occurred_at": event.occurred_at,
                        "fields": event.fields,
                    }
                    for event in item.events
                ],
            }
            for item in result.messages
        ],
    }


def project(
    name: Annotated[str, typer.Argument(help="Projection name, or 'all'.")],
    once: Annotated[
        bool, typer.Option("--once", help="Catch up, then exit instead of following.")
    ] = False,
    events_per_transaction: Annotated[
        int, typer.Option(help="Events committed together while catching up.")
    ] = 1000,
) -> None:
    """Keep projections in step with the event log (Ctrl-C stops)."""
    chosen = list(PROJECTIONS) if name == "all" else [name]
    run(lambda ledger, views: [projection_named(n) for n in chosen])
    stop = threading.Event()
    failures: list[str] = []
    threads = [
        threading.Thread(
            target=follow,
            args=(n, once, events_per_transaction, stop, failures),
            name=f"project-{n}",
        )
        for n in chosen
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
    if failures:
        fail(" ".join(failures))


def follow(
    name: str,
    once: bool,
    events_per_transaction: int,
    stop: threading.Event,
    failures: list[str],
) -> None:
    """Run one projection in this thread, reconnecting after a lost connection."""
    while not stop.is_set():
        try:
            with opened() as (ledger, views):
                runner = ProjectionRunner(
                    ledger,
                    views,
                    projection_named(name),
                    events_per_transaction=events_per_transaction,
                )
                processed = runner.catch_up()
                logger.info("projection %s caught up: %s events", name, processed)
                if not once:
                    runner.run(stop)
                return
        except LedgerError as exc:
            failures.append(exc.message)
            return
        except TRANSIENT_ERRORS:
            if once:
                raise
            logger.exception("projection %s lost its database; restarting", name)
            stop.wait(RESTART_SECONDS)
