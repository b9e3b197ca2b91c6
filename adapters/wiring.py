"""Builds the ledger from configuration (environment variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.blobs import FileBlobStore
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.ports import MEGABYTE, SendPolicy
from ledger.errors import LedgerError
from projections.threading_index import ThreadingViews

DEFAULT_HOME = Path("var")


@dataclass(frozen=True)
class Settings:
    """Everything the ledger reads from its environment."""

    database_url: str
    blob_dir: Path
    policy: SendPolicy
    smtp_url: str | None = None
    sms_api_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: str | None = None
    sms_status_callback: str | None = None
    reply_domain: str | None = None
    reply_secret: str | None = None
    unsubscribe_url: str | None = None
    outbox_dir: Path = DEFAULT_HOME / "outbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("LEDGER_HOME", str(DEFAULT_HOME)))
        return cls(
            database_url=env.get(
                "LEDGER_DATABASE_URL", f"sqlite:///{home / 'ledger.sqlite'}"
            ),
            blob_dir=Path(env.get("LEDGER_BLOB_DIR", str(home / "blobs"))),
            policy=SendPolicy(
                max_sms_segments=whole_number(env, "LEDGER_SMS_MAX_SEGMENTS", 10),
                attachment_limit_bytes=MEGABYTE
                * whole_number(env, "LEDGER_ATTACHMENT_LIMIT_MB", 25),
            ),
            smtp_url=env.get("LEDGER_SMTP_URL") or None,
            sms_api_url=env.get("LEDGER_SMS_API_URL") or None,
            sms_account_sid=env.get("LEDGER_SMS_ACCOUNT_SID") or None,
            sms_auth_token=env.get("LEDGER_SMS_AUTH_TOKEN") or None,
            sms_status_callback=env.get("LEDGER_SMS_STATUS_CALLBACK") or None,
            reply_domain=env.get("LEDGER_REPLY_DOMAIN") or None,
            reply_secret=env.get("LEDGER_REPLY_SECRET") or None,
            unsubscribe_url=env.get("LEDGER_UNSUBSCRIBE_URL") or None,
            outbox_dir=Path(env.get("LEDGER_OUTBOX_DIR", str(home / "outbox"))),
        )


def whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise LedgerError(f"{name} is '{raw}'; set it to a whole number above 0.")
    return int(raw)


def build_ledger(settings: Settings) -> Ledger:
    """The ledger application on the configured store and blob directory.

    Inbound threading looks addresses and outbound messages up in the
    directory and timeline views, reading only the log they have not reached.
    """
    prepare_store(settings.database_url)
    env = store_environment(settings.database_url)
    return Ledger(
        env=env,
        policy=settings.policy,
        blobs=FileBlobStore(settings.blob_dir),
        threading_index=ThreadingViews(env),
    )
