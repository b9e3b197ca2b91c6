"""`ledger serve`: the API, the Messages tab and the workers in one process.

With no configuration (no LEDGER_DATABASE_URL) it runs the embedded default:
SQLite under LEDGER_HOME, the outboxes instead of real providers, and the demo
company `demo` with two staff users whose password is printed at start. With
configuration it serves whatever the environment names and seeds nothing.

Shutdown on SIGINT or SIGTERM is graceful: the server stops accepting
connections and finishes the requests in flight, then each worker is asked to
stop after its current batch and joined, and only then is the store closed.
Every write is one transaction, so nothing half-done is ever left behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import typer
import uvicorn
from fastapi import FastAPI

from adapters.broker.settings import BrokerSettings
from adapters.broker.worker import BrokerWorker
from adapters.demo import TENANT, seed_demo
from adapters.dispatcher import (
    WorkerOptions,
    dispatch_policy,
    email_provider,
    partition_lock,
    sms_provider,
)
from adapters.dispatcher import serve as serve_dispatcher
from adapters.http import WebSettings, create_app
from adapters.http.metrics import Metrics
from adapters.http.projected import ProjectionReads
from adapters.projection_cli import follow
from adapters.store import store_environment
from adapters.wiring import Settings, build_ledger
from commands.application import Ledger
from commands.dispatch import Dispatcher
from commands.identity import AddUser, add_user
from commands.tracking import SentLinker
from ledger.access import StaffUser
from ledger.values import Permission, Principal
from projections.catalog import PROJECTIONS
from projections.reporting import STAGES

logger = logging.getLogger(__name__)

LINK_INTERVAL = 2.0

DEMO_PASSWORD = "brightside-demo"
DEMO_USERS = (
    ("maria", "Maria Lopez", (Permission.VIEW, Permission.CREATE)),
    ("sam", "Sam Reader", (Permission.VIEW,)),
)
WORKER_JOIN_SECONDS = 30.0
RESTART_SECONDS = 5.0
EVENTS_PER_TRANSACTION = 1000

Worker = Callable[[threading.Event], None]


@dataclass
class Supervisor:
    """Runs workers in threads and stops them together."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, worker: Worker) -> None:
        """Run `worker` in a thread of its own."""
        thread = threading.Thread(
            target=self.guarded, args=(name, worker), name=name, daemon=True
        )
        thread.start()
        self.threads.append(thread)
        logger.info("worker %s started", name)

    def guarded(self, name: str, worker: Worker) -> None:
        """Run a worker until it returns, restarting it after an error."""
        while not self.stop.is_set():
            try:
                worker(self.stop)
            except Exception:
                # Workers start together; on PostgreSQL their stores' table
                # checks can collide ("tuple concurrently updated"), and a
                # lost connection ends a worker too. Both heal on a restart.
                logger.exception("worker %s failed; restarting it", name)
                self.stop.wait(RESTART_SECONDS)
                continue
            return

    def shutdown(self) -> None:
        """Ask every worker to stop and wait for each."""
        self.stop.set()
        for thread in self.threads:
            thread.join(WORKER_JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("worker %s did not stop in time", thread.name)


class LedgerServer(uvicorn.Server):
    """uvicorn's server, which stops on SIGINT or SIGTERM and then returns.

    uvicorn re-raises the signal once it has shut down, which would end the
    process before the workers are joined and the store is closed; here the
    signal only starts the graceful stop.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Stop gracefully on SIGINT or SIGTERM while serving."""
        previous = {
            number: signal.signal(number, self.handle_exit)
            for number in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def is_embedded(env: Mapping[str, str]) -> bool:
    """Whether no store is configured, so the embedded demo runs."""
    return not env.get("LEDGER_DATABASE_URL")


def seed_embedded(ledger: Ledger) -> None:
    """The demo company, its history and its two staff users."""
    seed_demo(ledger)
    admin = Principal(TENANT, "ledger-serve", frozenset(Permission), "ledger serve")
    for login, name, permissions in DEMO_USERS:
        if ledger.load(StaffUser, StaffUser.id_for(login)) is None:
            command = AddUser(
                login=login,
                display_name=name,
                password=DEMO_PASSWORD,
                permissions=list(permissions),
            )
            add_user(ledger, admin, command)


def workers_for(settings: Settings, env: Mapping[str, str]) -> dict[str, Worker]:
    """The workers to run; the NATS broker only when LEDGER_NATS_URL is set."""
    found: dict[str, Worker] = {
        "dispatcher": dispatch_worker(settings),
        "provider-links": provider_links_worker(settings),
    }
    for name in PROJECTIONS:
        found[f"projection-{name}"] = projection_worker(name)
    if env.get("LEDGER_NATS_URL"):
        found["broker"] = broker_worker(settings, BrokerSettings.from_env(env))
    return found


async def stopped(stop: threading.Event) -> None:
    """Return once `stop` is set; a thread's event loop cannot take signals."""
    await asyncio.to_thread(stop.wait)


def dispatch_worker(settings: Settings) -> Worker:
    """The dispatcher on partition 0/1, stopped between batches by `stop`."""

    def work(stop: threading.Event) -> None:
        options = WorkerOptions()
        with partition_lock(settings.database_url, options.partition):
            asyncio.run(dispatch_until(settings, options, stop))

    return work


async def dispatch_until(
    settings: Settings, options: WorkerOptions, stop: threading.Event
) -> None:
    """Dispatch batches until `stop` is set, then close the providers."""
    ledger = build_ledger(settings)
    email, sms = email_provider(settings), sms_provider(settings)
    dispatcher = Dispatcher(
        ledger, email, sms, dispatch_policy(settings, options), options.partition
    )
    halt = asyncio.Event()
    relay = asyncio.create_task(stopped(stop))
    relay.add_done_callback(lambda _: halt.set())
    try:
        report = await serve_dispatcher(dispatcher, halt, options.poll_interval)
        logger.info(
            "dispatcher stopped: %s sent, %s failed", report.sent, report.failed
        )
    finally:
        await email.close()
        await sms.close()
        ledger.close()


def provider_links_worker(settings: Settings) -> Worker:
    """Links providers' message ids to sends, applying reports parked for them."""

    def work(stop: threading.Event) -> None:
        ledger = build_ledger(settings)
        linker = SentLinker(ledger)
        try:
            while not stop.is_set():
                linked = linker.catch_up()
                if linked:
                    logger.info("linked %d provider message ids", linked)
                stop.wait(LINK_INTERVAL)
        finally:
            ledger.close()

    return work


def broker_worker(settings: Settings, broker: BrokerSettings) -> Worker:
    """The NATS intake consumers and status publisher, until `stop`."""

    async def run(stop: threading.Event) -> None:
        ledger = build_ledger(settings)
        try:
            async with BrokerWorker(ledger, broker):
                await stopped(stop)
        finally:
            ledger.close()

    return lambda stop: asyncio.run(run(stop))


def projection_worker(name: str) -> Worker:
    """One projection following the log, restarted after a lost connection."""

    def work(stop: threading.Event) -> None:
        failures: list[str] = []
        follow(name, False, EVENTS_PER_TRANSACTION, stop, failures)
        for failure in failures:
            logger.error("projection %s stopped: %s", name, failure)

    return work


def build_app(
    ledger: Ledger, settings: Settings, env: Mapping[str, str]
) -> tuple[FastAPI, ProjectionReads]:
    """The HTTP app with the provider hooks and the projections' reads."""
    reads = ProjectionReads(store_environment(settings.database_url))
    metrics = Metrics()
    for name in PROJECTIONS:
        metrics.watch_lag(name, partial(reads.lag, ledger, name))
    for stage in STAGES:
        metrics.watch_stage(stage, partial(reads.stage_count, ledger, stage))
    app = create_app(
        ledger,
        WebSettings.from_env(env),
        timeline=reads.timeline,
        reports=reads.delivery_report,
        threads=reads.threads,
        status=reads.status_report,
        providers=settings,
        metrics=metrics,
    )
    return app, reads


def serve(host: str, port: int, env: Mapping[str, str] | None = None) -> None:
    """Run the whole product until SIGINT or SIGTERM."""
    env = os.environ if env is None else env
    settings = Settings.from_env(env)
    ledger = build_ledger(settings)
    supervisor = Supervisor()
    try:
        if is_embedded(env):
            seed_embedded(ledger)
        app, reads = build_app(ledger, settings, env)
        for name, worker in workers_for(settings, env).items():
            supervisor.start(name, worker)
        server = LedgerServer(
            uvicorn.Config(app, host=host, port=port, log_config=None)
        )
        announce(host, port, is_embedded(env))
        asyncio.run(server.serve())
        reads.close()
    finally:
        supervisor.shutdown()
        ledger.close()
        logger.info("ledger serve stopped")


def announce(host: str, port: int, embedded: bool) -> None:
    """Print where the server listens and, for the demo, how to sign in."""
    where = f"http://{host}:{port}"
    typer.echo(f"Serving the message ledger at {where} (API document: /openapi.json)")
    if embedded:
        typer.echo(
            f"Demo company '{TENANT}': sign in at {where}/login as maria "
            f"(can send) or sam (view only), password {DEMO_PASSWORD}; then open "
            f"{where}/{TENANT}/customers/c-1001/customer-messages"
        )
