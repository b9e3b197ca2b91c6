"""What every `ledger` subcommand shares: consoles, common options, failing."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

CompanyOption = Annotated[
    str, typer.Option("--company", envvar="LEDGER_COMPANY", help="Company slug.")
]
UserOption = Annotated[
    str | None, typer.Option("--user", envvar="LEDGER_USER", help="Acting user.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(message: str) -> NoReturn:
    """Print one sentence on stderr and exit with status 1."""
    err.print(f"[bold red]Error:[/] {message}", highlight=False)
    raise typer.Exit(1)
