"""Who may use the ledger: staff users with passwords, and API tokens for services.

Neither a password nor a token is ever stored. A password is kept as an scrypt
hash with its own salt and cost parameters, so the cost can rise later without
invalidating older hashes. A token is random (256 bits), so one SHA-256 of its
secret is enough to make the stored hash useless to a thief; its aggregate id
is printed in the token itself, so checking a token is one read by id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

ACCESS_NAMESPACE = uuid.UUID("5d0f3a6e-2c1b-4b7e-9f3a-7e2d8c4b1a90")
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
TOKEN_PREFIX = "mlt"


def hash_password(password: str) -> str:
    """An scrypt hash of `password` with a fresh salt, as `scrypt$n$r$p$salt$hash`."""
    salt = secrets.token_bytes(16)
    digest = scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, encoded: str) -> bool:
    """Whether `password` is the one `encoded` was made from."""
    scheme, n, r, p, salt, expected = encoded.split("$")
    if scheme != "scrypt":
        return False
    digest = scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return hmac.compare_digest(digest.hex(), expected)


def scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=32
    )


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class StaffUser(Aggregate):
    """A person who signs in to the Messages tab, within one company."""

    if TYPE_CHECKING:
        tenant_id: str
        login: str
        display_name: str
        permissions: list[str]
        password_hash: str
        active: bool

    @staticmethod
    def id_for(login: str) -> uuid.UUID:
        return uuid.uuid5(ACCESS_NAMESPACE, f"user\x1f{login.lower()}")

    class Added(Aggregate.Created):
        class_version = 1
        tenant_id: str
        login: str
        display_name: str
        permissions: list[str]
        password_hash: str

        def apply(self, user: StaffUser) -> None:
            user.tenant_id = self.tenant_id
            user.login = self.login
            user.display_name = self.display_name
            user.permissions = list(self.permissions)
            user.password_hash = self.password_hash
            user.active = True

    class PasswordChanged(Aggregate.Event):
        class_version = 1
        password_hash: str

        def apply(self, user: StaffUser) -> None:
            user.password_hash = self.password_hash

    class PermissionsChanged(Aggregate.Event):
        class_version = 1
        permissions: list[str]

        def apply(self, user: StaffUser) -> None:
            user.permissions = list(self.permissions)

    class Deactivated(Aggregate.Event):
        class_version = 1

        def apply(self, user: StaffUser) -> None:
            user.active = False


class ApiToken(Aggregate):
    """A service's credential within one company; only its hash is stored."""

    if TYPE_CHECKING:
        tenant_id: str
        name: str
        permissions: list[str]
        secret_hash: str
        issued_by: str | None
        revoked: bool

    class Issued(Aggregate.Created):
        class_version = 1
        tenant_id: str
        name: str
        permissions: list[str]
        secret_hash: str
        issued_by: str | None

        def apply(self, token: ApiToken) -> None:
            token.tenant_id = self.tenant_id
            token.name = self.name
            token.permissions = list(self.permissions)
            token.secret_hash = self.secret_hash
            token.issued_by = self.issued_by
            token.revoked = False

    class Revoked(Aggregate.Event):
        class_version = 1
        revoked_by: str | None

        def apply(self, token: ApiToken) -> None:
            token.revoked = True

    def matches(self, secret: str) -> bool:
        """Whether `secret` is this token's, compared in constant time."""
        return hmac.compare_digest(self.secret_hash, secret_digest(secret))


def new_token_secret() -> str:
    return secrets.token_urlsafe(32)


def token_text(token_id: uuid.UUID, secret: str) -> str:
    """The token as handed to a service: prefix, aggregate id and secret."""
    return f"{TOKEN_PREFIX}_{token_id.hex}_{secret}"


def parse_token(text: str) -> tuple[uuid.UUID, str] | None:
    """The aggregate id and secret in a token, or None if it is not one of ours."""
    prefix, _, rest = text.partition("_")
    token_hex, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not secret:
        return None
    try:
        return uuid.UUID(hex=token_hex), secret
    except ValueError:
        return None
