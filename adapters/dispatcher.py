"""The dispatch worker: runs the Dispatcher on the configured store and providers.

Providers come from the settings: SMTP when LEDGER_SMTP_URL is set, else the
Maildir outbox; the Twilio-compatible API when LEDGER_SMS_ACCOUNT_SID and
LEDGER_SMS_AUTH_TOKEN are set, else the JSON-lines outbox.

Before dispatching, the worker takes its partition's lock and holds it until it
exits, so a second worker on the same partition waits instead of sending the
same messages: a PostgreSQL session advisory lock (released by the server when
the process dies, even by SIGKILL), or on SQLite an exclusive `flock` on a file
beside the database (released by the kernel likewise).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import signal
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from eventsourcing.persistence import PersistenceError

from adapters.outbox import JsonLinesSmsOutbox, MaildirOutbox
from adapters.smtp import SmtpProvider, SmtpSettings
from adapters.store import store_environment
from adapters.twilio_sms import DEFAULT_API_URL, TwilioSettings, TwilioSmsProvider
from adapters.wiring import Settings, build_ledger
from commands.application import Ledger
from commands.dispatch import Dispatcher, DispatchPolicy, DispatchReport, Partition
from commands.ports import EmailProvider, SmsProvider
from ledger.errors import LedgerError, StoreUnavailable

logger = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 1.0
STORE_RETRY_SECONDS = 1.0
STORE_TRIES = 10


@dataclass(frozen=True)
class WorkerOptions:
    """How one dispatch worker runs, from its command line."""

    partition: Partition = field(default_factory=Partition)
    once: bool = False
    batch_size: int = 200
    concurrency: int = 8
    max_tries: int = 4
    first_backoff: float = 0.5
    poll_interval: float = 0.5


def email_provider(settings: Settings) -> EmailProvider:
    """SMTP if configured, else the Maildir outbox."""
    if settings.smtp_url:
        return SmtpProvider(SmtpSettings.from_url(settings.smtp_url))
    return MaildirOutbox(settings.outbox_dir / "mail")


def sms_provider(settings: Settings) -> SmsProvider:
    """The Twilio-compatible API if configured, else the JSON-lines outbox."""
    sid, token = settings.sms_account_sid, settings.sms_auth_token
    if sid and token:
        return TwilioSmsProvider(
            TwilioSettings(
                account_sid=sid,
                auth_token=token,
                api_url=settings.sms_api_url or DEFAULT_API_URL,
                status_callback=settings.sms_status_callback,
            )
        )
    if sid or token or settings.sms_api_url:
        raise LedgerError(
            "The SMS API is only partly configured; set both "
            "LEDGER_SMS_ACCOUNT_SID and LEDGER_SMS_AUTH_TOKEN, or neither."
        )
    return JsonLinesSmsOutbox(settings.outbox_dir / "sms.jsonl")


def dispatch_policy(settings: Settings, options: WorkerOptions) -> DispatchPolicy:
    secret = settings.reply_secret.encode() if settings.reply_secret else None
    if secret is None:
        logger.warning(
            "LEDGER_REPLY_SECRET is not set: emails go out without a signed Reply-To"
        )
    return DispatchPolicy(
        batch_size=options.batch_size,
        concurrency=options.concurrency,
        max_tries=options.max_tries,
        first_backoff=options.first_backoff,
        reply_domain=settings.reply_domain,
        reply_secret=secret,
        unsubscribe_url=settings.unsubscribe_url,
    )


def run_worker(settings: Settings, options: WorkerOptions) -> DispatchReport:
    """Dispatch until stopped (SIGTERM, SIGINT), or until drained with `once`."""
    with partition_lock(settings.database_url, options.partition):
        return asyncio.run(dispatch(settings, options))


async def dispatch(settings: Settings, options: WorkerOptions) -> DispatchReport:
    email, sms = email_provider(settings), sms_provider(settings)
    ledger, dispatcher = open_dispatcher(settings, options, email, sms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    logger.info("dispatching %s", options.partition.tracking_name)
    try:
        return await serve(dispatcher, stop, options.poll_interval, once=options.once)
    finally:
        await email.close()
        await sms.close()
        ledger.close()


def open_dispatcher(
    settings: Settings,
    options: WorkerOptions,
    email: EmailProvider,
    sms: SmsProvider,
) -> tuple[Ledger, Dispatcher]:
    """The ledger and dispatcher, tried again if the store fails at startup.

    Workers started together create the same tables at once; PostgreSQL
    answers one of them "tuple concurrently updated", SQLite "database is
    locked". Both pass when tried again.
    """
    policy = dispatch_policy(settings, options)
    for number in range(1, STORE_TRIES + 1):
        ledger = None
        try:
            ledger = build_ledger(settings)
            return ledger, Dispatcher(ledger, email, sms, policy, options.partition)
        except PersistenceError:
            if ledger is not None:
                ledger.close()
            if number == STORE_TRIES:
                raise
            logger.warning("the event store failed at startup; trying again")
            time.sleep(STORE_RETRY_SECONDS)
    raise AssertionError("unreachable: the last try returns or raises")


async def serve(
    dispatcher: Dispatcher,
    stop: asyncio.Event,
    poll_interval: float,
    *,
    once: bool = False,
) -> DispatchReport:
    """Dispatch batches as they appear until `stop` is set, polling when idle.

    With `once`, stop as soon as nothing is left. A failing store is tried
    again; nothing of a failed batch was committed, so its sends are repeated
    with the same identities once the store answers.
    """
    total, failures = DispatchReport(), 0
    while not stop.is_set():
        try:
            report = await dispatcher.dispatch_batch()
        except (PersistenceError, StoreUnavailable):
            failures += 1
            if once and failures >= STORE_TRIES:
                raise
            logger.exception("the event store failed; trying again shortly")
            await pause(stop, STORE_RETRY_SECONDS)
            continue
        failures = 0
        if report is not None:
            total += report
        elif once:
            break
        else:
            await pause(stop, poll_interval)
    await dispatcher.close()
    return total


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, or less if `stop` is set meanwhile."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@contextmanager
def partition_lock(database_url: str, partition: Partition) -> Iterator[None]:
    """Hold the partition's lock for the life of the block, waiting for it."""
    env = store_environment(database_url)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
        with postgres_lock(env, partition):
            yield
    else:
        with file_lock(Path(env["SQLITE_DBNAME"]), partition):
            yield


@contextmanager
def postgres_lock(env: dict[str, str], partition: Partition) -> Iterator[None]:
    schema = env.get("POSTGRES_SCHEMA", "public")
    # Advisory locks are per database, so the key names the schema as well.
    key = zlib.crc32(f"{schema}.{partition.tracking_name}".encode()) - 2**31
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        autocommit=True,
    ) as connection:
        waited = False
        while True:
            row = connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (key,)
            ).fetchone()
            if row is not None and row[0]:
                break
            if not waited:
                logger.warning(
                    "%s is held by another dispatcher; waiting for it",
                    partition.tracking_name,
                )
                waited = True
            time.sleep(LOCK_POLL_SECONDS)
        yield


@contextmanager
def file_lock(database: Path, partition: Partition) -> Iterator[None]:
    path = database.with_name(f"{database.name}.{partition.tracking_name}.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning(
                "%s is held by another dispatcher; waiting for it",
                partition.tracking_name,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
