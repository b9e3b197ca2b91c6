"""What the HTTP surface reads from its environment."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.wiring import DEFAULT_HOME
from ledger.errors import LedgerError

SESSION_KEY_FILE = "session.key"


@dataclass(frozen=True)
class WebSettings:
    """Session signing and cookie settings for the API and the Messages tab."""

    session_secret: bytes
    secure_cookies: bool = False
    session_hours: int = 12

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebSettings:
        """Settings from LEDGER_* variables; a session key is made if none."""
        env = os.environ if env is None else env
        home = Path(env.get("LEDGER_HOME", str(DEFAULT_HOME)))
        configured = env.get("LEDGER_SESSION_SECRET")
        if configured is not None and len(configured) < 32:
            raise LedgerError(
                "LEDGER_SESSION_SECRET is shorter than 32 characters; set a long "
                "random value, or unset it to keep a generated key in LEDGER_HOME."
            )
        secret = configured.encode() if configured else stored_secret(home)
        return cls(
            session_secret=secret,
            secure_cookies=env.get("LEDGER_SECURE_COOKIES", "no").lower()
            in {"1", "yes", "true"},
        )


def stored_secret(home: Path) -> bytes:
    """The session key kept in `home`, created on first use, readable by us only."""
    path = home / SESSION_KEY_FILE
    if path.exists():
        return path.read_bytes()
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(secret)
    return secret
