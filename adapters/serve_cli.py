"""`ledger serve`, as mounted by adapters.cli.

The server and its workers are imported only when the command runs: they pull
in FastAPI, uvicorn, the broker and the providers, which every other `ledger`
command would otherwise pay for at start.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.errors import LedgerError


def serve_command(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Run the API, the Messages tab and the workers in one process."""
    from adapters.serve import serve

    try:
        serve(host, port)
    except LedgerError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
