"""`ledger users add|deactivate`, `ledger tokens issue|revoke`: who may use the API.

Mounted by adapters.cli. Like every operator command, these act for one
company (`--company`, default LEDGER_COMPANY, else `demo`). A password is read
from a prompt (or LEDGER_NEW_PASSWORD, for scripts) and never echoed; a token
is printed once and only its hash is kept.
"""

from __future__ import annotations

import getpass
import uuid
from typing import Annotated

import typer
from pydantic import ValidationError

from adapters.terminal import CompanyOption, err, fail, out
from adapters.wiring import Settings, build_ledger
from commands.identity import (
    AddUser,
    IssueToken,
    add_user,
    deactivate_user,
    issue_token,
    revoke_token,
)
from commands.models import invalid_command
from ledger.errors import LedgerError
from ledger.values import Permission, Principal

users_app = typer.Typer(
    help="Staff users who sign in to the web page.", no_args_is_help=True
)
tokens_app = typer.Typer(help="API tokens for services.", no_args_is_help=True)


PermissionsOption = Annotated[
    list[Permission],
    typer.Option(
        "--permission",
        help="Grant a permission; repeat for both. Default: messages:view.",
    ),
]


def operator(company: str) -> Principal:
    name = getpass.getuser()
    return Principal(company, name, frozenset(Permission), name)


@users_app.command("add")
def users_add(
    login: Annotated[str, typer.Argument(help="The name they sign in with.")],
    name: Annotated[str, typer.Option(help="Their full name.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="LEDGER_NEW_PASSWORD",
            help="At least 10 characters; prompted for when not given.",
        ),
    ],
    permission: PermissionsOption = [Permission.VIEW],  # noqa: B006
    company: CompanyOption = "demo",
) -> None:
    """Add a staff user to the company, or reset their password and permissions."""
    ledger = build_ledger(Settings.from_env())
    try:
        command = AddUser(
            login=login, display_name=name, password=password, permissions=permission
        )
        user = add_user(ledger, operator(company), command)
    except ValidationError as exc:
        fail(invalid_command(exc).message)
    except LedgerError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    granted = ", ".join(user.permissions)
    out.print(f"User [bold]{user.login}[/] of {company} can sign in ({granted}).")


@users_app.command("deactivate")
def users_deactivate(
    login: Annotated[str, typer.Argument(help="The user's login.")],
    company: CompanyOption = "demo",
) -> None:
    """Stop a user signing in; their open sessions end on their next request."""
    ledger = build_ledger(Settings.from_env())
    try:
        changed = deactivate_user(ledger, operator(company), login)
    except LedgerError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    out.print(
        f"User {login} can no longer sign in."
        if changed
        else f"User {login} was already deactivated."
    )


@tokens_app.command("issue")
def tokens_issue(
    name: Annotated[str, typer.Argument(help="Which service the token is for.")],
    permission: PermissionsOption = [Permission.VIEW],  # noqa: B006
    company: CompanyOption = "demo",
) -> None:
    """Issue an API token; it is printed once, so store it now."""
    ledger = build_ledger(Settings.from_env())
    try:
        command = IssueToken(name=name, permissions=permission)
        issued = issue_token(ledger, operator(company), command)
    except ValidationError as exc:
        fail(invalid_command(exc).message)
    except LedgerError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    err.print(f"Token {issued.token_id} for {name}; it will not be shown again:")
    out.print(issued.text, highlight=False, soft_wrap=True)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id printed at issue.")],
    company: CompanyOption = "demo",
) -> None:
    """Revoke a token; requests carrying it are refused from then on."""
    ledger = build_ledger(Settings.from_env())
    try:
        revoked = revoke_token(ledger, operator(company), parse_id(token_id))
    except LedgerError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    out.print("Token revoked." if revoked else "Token was already revoked.")


def parse_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        fail(f"'{text}' is not a token id; copy the id printed when it was issued.")
