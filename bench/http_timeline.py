"""Timeline page benchmark: GET /api/{company}/customers/{id}/messages, two readers.

Side by side in one run, over the same SQLite store:

- naive: the scan reader (`read_timeline`), which walks every Queued and
  Received event in the log and loads each of the customer's messages;
- projected: the reader `ledger serve` uses (`ProjectionReads.timeline`), which asks
  the timeline projection for one page and loads only that page's messages.

Requests go through the whole HTTP app in process (FastAPI's TestClient) with
an API token, so authentication, rendering to JSON and the reader are all on
the clock. The log holds `--messages` messages spread over `--customers`
customers; each request lists one customer's newest 50 (plain, filtered by
status, and searched).

    .venv/bin/python bench/http_timeline.py
    .venv/bin/python bench/http_timeline.py --messages 5000 --customers 50
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from adapters.blobs import FileBlobStore
from adapters.http import WebSettings, create_app
from adapters.http.projected import ProjectionReads
from adapters.http.reading import TimelineReader, read_timeline
from adapters.store import store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.identity import IssueToken, issue_token
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.send import send_message
from ledger.values import Channel, Permission, Principal

STAFF = Principal("bench", "bench", frozenset(Permission), "Bench")
QUERIES = {
    "newest 50": {"limit": 50},
    "queued only": {"limit": 50, "status": "queued"},
    "search": {"limit": 50, "q": "invoice"},
}


def seed(ledger: Ledger, messages: int, customers: int) -> None:
    register_company(
        ledger,
        STAFF,
        RegisterCompany(name="Bench Dental", email_sender="desk@bench.example"),
    )
    for number in range(customers):
        upsert_customer(
            ledger,
            STAFF,
            UpsertCustomer(
                customer_id=f"c-{number}",
                name=f"Customer {number}",
                email=f"customer{number}@example.com",
            ),
        )
    for number in range(messages):
        topic = "invoice" if number % 7 == 0 else "appointment"
        send_message(
            ledger,
            STAFF,
            SendMessage(
                customer_id=f"c-{number % customers}",
                channel=Channel.EMAIL,
                subject=f"Your {topic} #{number}",
                body=f"Hello, this is about your {topic}.",
            ),
        )


def timed(
    ledger: Ledger, reader: TimelineReader, token: str, rounds: int
) -> dict[str, float]:
    app = create_app(ledger, WebSettings(session_secret=b"b" * 64), timeline=reader)
    headers = {"Authorization": f"Bearer {token}"}
    found: dict[str, float] = {}
    with TestClient(app) as client:
        url = "/api/bench/customers/c-1/messages"
        client.get(url, headers=headers).raise_for_status()
        for name, params in QUERIES.items():
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                client.get(url, params=params, headers=headers).raise_for_status()
                samples.append(time.perf_counter() - started)
            found[name] = statistics.median(samples) * 1000
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-http-"))
    try:
        env = store_environment(f"sqlite:///{home / 'ledger.sqlite'}")
        ledger = Ledger(env=env, blobs=FileBlobStore(home / "blobs"))
        started = time.perf_counter()
        seed(ledger, options.messages, options.customers)
        token = issue_token(
            ledger, STAFF, IssueToken(name="bench", permissions=list(Permission))
        ).text
        print(
            f"seeded {options.messages} messages for {options.customers} customers "
            f"in {time.perf_counter() - started:.1f} s"
        )
        reads = ProjectionReads(env)
        naive = timed(ledger, read_timeline, token, options.rounds)
        fast = timed(ledger, reads.timeline, token, options.rounds)
        reads.close()
        ledger.close()
        print(f"{'request (median ms)':<22}{'naive':>10}{'projected':>12}{'ratio':>9}")
        for name in QUERIES:
            ratio = naive[name] / fast[name]
            print(f"{name:<22}{naive[name]:>10.1f}{fast[name]:>12.1f}{ratio:>8.1f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
