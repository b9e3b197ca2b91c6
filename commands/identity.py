"""Use cases for access: staff users, their sign-in, and API tokens.

Users are global by login (a login belongs to exactly one company) so that the
sign-in form needs no company field. Every check that fails answers None the
same way, whatever the reason, so a caller cannot tell a wrong password from
an unknown login; an unknown login still pays for one scrypt hash.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Annotated

from pydantic import Field, field_validator

from commands.access import require
from commands.application import Decision, Ledger
from commands.directory import company_of
from commands.models import Command
from ledger.access import (
    ApiToken,
    StaffUser,
    hash_password,
    new_token_secret,
    parse_token,
    password_matches,
    secret_digest,
    token_text,
)
from ledger.errors import InvalidCommand
from ledger.values import Permission, Principal

MIN_PASSWORD = 10

PermissionList = Annotated[list[Permission], Field(min_length=1)]


class AddUser(Command):
    """Add a staff user to the principal's company, or reset their password."""

    login: Annotated[str, Field(min_length=2, max_length=100, pattern=r"^[\w.@-]+$")]
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    password: Annotated[str, Field(max_length=1000)]
    permissions: PermissionList

    @field_validator("password")
    @classmethod
    def long_enough(cls, value: str) -> str:
        if len(value) < MIN_PASSWORD:
            raise ValueError(f"is {len(value)} characters; use at least {MIN_PASSWORD}")
        return value


class IssueToken(Command):
    """Issue an API token for a service of the principal's company."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    permissions: PermissionList


@dataclass(frozen=True)
class IssuedToken:
    """A new token; `text` is shown once and never stored."""

    token_id: uuid.UUID
    text: str


def add_user(ledger: Ledger, principal: Principal, command: AddUser) -> StaffUser:
    """Create a staff user, or update an existing one's password and permissions."""
    require(principal, Permission.CREATE)
    company_of(ledger, principal)
    password_hash = hash_password(command.password)
    permissions = sorted(p.value for p in command.permissions)

    def decide() -> Decision[StaffUser]:
        user_id = StaffUser.id_for(command.login)
        user = ledger.load(StaffUser, user_id)
        if user is None:
            user = StaffUser._create(
                StaffUser.Added,
                id=user_id,
                tenant_id=principal.tenant_id,
                login=command.login.lower(),
                display_name=command.display_name,
                permissions=permissions,
                password_hash=password_hash,
            )
            return Decision(user, [user])
        if user.tenant_id != principal.tenant_id:
            raise InvalidCommand(
                "login",
                f"The login '{command.login}' is taken; choose another login.",
            )
        user.trigger_event(StaffUser.PasswordChanged, password_hash=password_hash)
        if user.permissions != permissions:
            user.trigger_event(StaffUser.PermissionsChanged, permissions=permissions)
        return Decision(user, [user])

    return ledger.execute(decide)


def deactivate_user(ledger: Ledger, principal: Principal, login: str) -> bool:
    """Stop a user of the company signing in; False when they already could not."""
    require(principal, Permission.CREATE)

    def decide() -> Decision[bool]:
        user = ledger.load_in_tenant(
            StaffUser, StaffUser.id_for(login), principal.tenant_id, "user", login
        )
        if not user.active:
            return Decision(False)
        user.trigger_event(StaffUser.Deactivated)
        return Decision(True, [user])

    return ledger.execute(decide)


def sign_in(ledger: Ledger, login: str, password: str) -> StaffUser | None:
    """The active user with this login and password, or None."""
    user = ledger.load(StaffUser, StaffUser.id_for(login))
    if user is None or not user.active:
        # Hash anyway, so an unknown login takes as long as a wrong password.
        password_matches(password, decoy_hash())
        return None
    return user if password_matches(password, user.password_hash) else None


@cache
def decoy_hash() -> str:
    """A hash no password matches, made once per process."""
    return hash_password(secrets.token_hex(16))


def user_principal(user: StaffUser) -> Principal:
    """The principal a signed-in user acts as."""
    return Principal(
        tenant_id=user.tenant_id,
        user_id=user.login,
        permissions=frozenset(Permission(p) for p in user.permissions),
        display_name=user.display_name,
    )


def active_user(ledger: Ledger, user_id: uuid.UUID) -> StaffUser | None:
    """The user with this aggregate id, if they exist and may still sign in."""
    user = ledger.load(StaffUser, user_id)
    return user if user is not None and user.active else None


def issue_token(
    ledger: Ledger, principal: Principal, command: IssueToken
) -> IssuedToken:
    """Issue a token with at most the issuer's own permissions."""
    require(principal, Permission.CREATE)
    company_of(ledger, principal)
    for permission in command.permissions:
        require(principal, permission)
    secret = new_token_secret()
    token = ApiToken._create(
        ApiToken.Issued,
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        name=command.name,
        permissions=sorted(p.value for p in command.permissions),
        secret_hash=secret_digest(secret),
        issued_by=principal.user_id,
    )
    ledger.execute(lambda: Decision(token, [token]))
    return IssuedToken(token.id, token_text(token.id, secret))


def token_principal(ledger: Ledger, text: str) -> Principal | None:
    """The principal a presented token stands for, or None if it is not valid."""
    parsed = parse_token(text)
    if parsed is None:
        return None
    token_id, secret = parsed
    token = ledger.load(ApiToken, token_id)
    if token is None or token.revoked or not token.matches(secret):
        return None
    return Principal(
        tenant_id=token.tenant_id,
        user_id=f"token:{token.name}",
        permissions=frozenset(Permission(p) for p in token.permissions),
        display_name=token.name,
    )


def revoke_token(ledger: Ledger, principal: Principal, token_id: uuid.UUID) -> bool:
    """Revoke one of the company's tokens; False when it was already revoked."""
    require(principal, Permission.CREATE)

    def decide() -> Decision[bool]:
        token = ledger.load_in_tenant(
            ApiToken, token_id, principal.tenant_id, "API token", token_id
        )
        if token.revoked:
            return Decision(False)
        token.trigger_event(ApiToken.Revoked, revoked_by=principal.user_id)
        return Decision(True, [token])

    return ledger.execute(decide)
