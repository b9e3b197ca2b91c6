"""`ledger worker …`: the long-running processes that follow the event log.

Each worker adds its command to the `workers` sub-app here; adapters.cli
mounts it as `ledger worker`.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from adapters.dispatcher import WorkerOptions, run_worker
from adapters.projection_cli import project
from adapters.terminal import err
from adapters.wiring import Settings
from commands.dispatch import Partition
from ledger.errors import LedgerError

logger = logging.getLogger(__name__)

workers = typer.Typer(
    help="Workers that follow the event log and act on it.", no_args_is_help=True
)
workers.command("project")(project)


def parse_partition(text: str) -> Partition:
    """`INDEX/COUNT`, e.g. 0/2 for the first of two dispatchers."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise LedgerError(
            f"--partition is '{text}'; write it as INDEX/COUNT, e.g. 0/2."
        )
    return Partition(int(index), int(count))


@workers.command("dispatch")
def dispatch(
    partition: Annotated[
        str,
        typer.Option(
            help="INDEX/COUNT: this worker's share when several dispatch at once; "
            "every worker must use the same COUNT."
        ),
    ] = "0/1",
    once: Annotated[
        bool, typer.Option("--once", help="Exit once nothing is left to send.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 200,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Sends in flight at once.")
    ] = 8,
    max_tries: Annotated[
        int, typer.Option(min=1, max=20, help="Tries per attempt before Failed.")
    ] = 4,
    backoff: Annotated[
        float, typer.Option(min=0, help="Seconds before the second try; doubles.")
    ] = 0.5,
    poll: Annotated[
        float, typer.Option(min=0.01, help="Seconds between looks when idle.")
    ] = 0.5,
) -> None:
    """Send every queued message through its channel's provider."""
    try:
        options = WorkerOptions(
            partition=parse_partition(partition),
            once=once,
            batch_size=batch_size,
            concurrency=concurrency,
            max_tries=max_tries,
            first_backoff=backoff,
            poll_interval=poll,
        )
        report = run_worker(Settings.from_env(), options)
    except LedgerError as exc:
        err.print(f"[bold red]Error:[/] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    typer.echo(
        f"Dispatched {report.notifications} notifications: "
        f"{report.sent} sent, {report.failed} failed."
    )


if __name__ == "__main__":
    # `python -m adapters.workers dispatch` starts faster than the full CLI.
    logging.basicConfig(level=os.environ.get("LEDGER_LOG_LEVEL", "WARNING"))
    workers(prog_name="ledger worker")
