"""SendGrid webhook intake: batched posts against one post per event.

Both ways go through the real router (in-process, FastAPI's TestClient) onto
a real store, with signatures checked:

- naive: SendGrid configured to post each event on its own (one request,
  one signature check and one link catch-up per event);
- batched: SendGrid's default, arrays of up to `--batch` events per post.

Each event is still its own transaction either way, so a bad one never
takes the rest down; the difference is what a request costs around them.
Afterwards every message must be `opened`, or the run fails.

    .venv/bin/python bench/tracking_webhooks.py                  # SQLite
    .venv/bin/python bench/tracking_webhooks.py --store postgres --messages 300

Each run uses its own SQLite file or PostgreSQL schema and removes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, UpsertCustomer
from ledger.message import Message
from ledger.values import Permission, Principal, Status
from tests.integration.tracking_support import (
    SendGridSigner,
    client_for,
    configure,
    queue_email,
    record_sent,
)

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
STAFF = Principal("bench", "bench", frozenset(Permission))


def prepared_ledger(url: str) -> tuple[Ledger, SendGridSigner, list[uuid.UUID]]:
    prepare_store(url)
    return Ledger(env=store_environment(url)), SendGridSigner(), []


def seed(ledger: Ledger, signer: SendGridSigner, messages: int) -> list[uuid.UUID]:
    register_company(
        ledger, STAFF, RegisterCompany(name="Bench", email_sender="a@bench.example")
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(customer_id="c", name="Cy Bench", email="cy@bench.example"),
    )
    configure(ledger, STAFF, signer)
    ids = []
    for number in range(messages):
        message_id = queue_email(ledger, STAFF, "c")
        record_sent(ledger, STAFF, message_id, "sendgrid", f"sg{number:08d}")
        ids.append(message_id)
    return ids


def events_for(ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    events = []
    for number, _ in enumerate(ids):
        for kind in ("delivered", "open"):
            events.append(
                {
                    "email": "cy@bench.example",
                    "timestamp": 1764756126,
                    "event": kind,
                    "sg_event_id": f"{kind}-{number}",
                    "sg_message_id": f"sg{number:08d}.recvd-bench-0",
                }
            )
    return events


def run(url: str, messages: int, batch: int) -> float:
    ledger, signer, _ = prepared_ledger(url)
    ids = seed(ledger, signer, messages)
    events = events_for(ids)
    client = client_for(ledger)
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]

    started = time.perf_counter()
    for chunk in chunks:
        body = json.dumps(chunk).encode()
        response = client.post(
            "/webhooks/bench/sendgrid/events",
            content=body,
            headers=signer.headers(body),
        )
        if response.status_code != 200 or response.json()["rejected"]:
            raise SystemExit(f"post failed: {response.status_code} {response.text}")
    elapsed = time.perf_counter() - started

    for message_id in ids:
        message = ledger.repository.get(message_id)
        if not isinstance(message, Message) or message.status != Status.OPENED:
            raise SystemExit(f"message {message_id} is not opened")
    ledger.close()
    return len(events) / elapsed


def store_url(store: str, tag: str, folder: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{folder / (tag + '.sqlite')}"
    return f"{POSTGRES}?schema=bench_track_{tag}_{uuid.uuid4().hex[:8]}"


def drop(url: str) -> None:
    if "schema=" in url:
        schema = url.rpartition("schema=")[2]
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        figures = {}
        for name, batch in (("naive", 1), ("batched", options.batch)):
            url = store_url(options.store, name, Path(folder))
            try:
                figures[name] = run(url, options.messages, batch)
            finally:
                drop(url)
    events = options.messages * 2
    print(f"store={options.store} events={events} batch={options.batch}")
    for name, rate in figures.items():
        print(f"{name:>8}: {rate:8.0f} events/s")
    print(f"   ratio: {figures['batched'] / figures['naive']:.2f}x")


if __name__ == "__main__":
    main()
