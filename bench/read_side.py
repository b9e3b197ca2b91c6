"""Read-side benchmark: projection catch-up, rebuild, timeline, search and replay.

Every figure is printed beside the naive way, measured in the same run:

- catch-up: 1,000 events per transaction vs one transaction per event (the
  library runner's pattern), over the same first --naive-events events;
- rebuild of the whole log, in a child process whose resident memory is
  sampled throughout;
- timeline page and search p99 from the view vs reading the log
  (commands.history.customer_messages, a few samples only: it is slow);
- replay of a customer with --heavy messages, ids from the timeline vs a
  scan of the whole log.

    .venv/bin/python bench/read_side.py --messages 100000 --customers 10000

The store is a fresh PostgreSQL schema (dropped afterwards unless --keep), or
the --database-url given. Events are generated in big save() batches.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.history import customer_messages
from commands.replay import replay_customer
from ledger.directory import Company, Customer
from ledger.message import Message
from ledger.values import Permission, Principal
from projections.catalog import projection_named
from projections.database import open_views
from projections.reading import (
    TimelineFilter,
    TimelineIndex,
    customer_timeline,
)
from projections.runtime import (
    ProjectionRunner,
    prepare_registry,
    rebuild,
    start_generation,
)

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
TENANT = "bench-dental"
WORDS = (
    "appointment",
    "cleaning",
    "crown",
    "filling",
    "xray",
    "invoice",
    "payment",
    "reminder",
    "hygiene",
    "whitening",
    "implant",
    "braces",
    "checkup",
    "insurance",
    "referral",
    "prescription",
    "recall",
    "emergency",
    "extraction",
    "consultation",
    "balance",
    "receipt",
    "schedule",
    "confirm",
    "cancel",
    "tuesday",
    "monday",
    "friday",
    "morning",
    "afternoon",
    "parking",
    "address",
    "directions",
)
STAFF = Principal(TENANT, "bench.user", frozenset(Permission), "Bench")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--heavy", type=int, default=1_000, help="messages of one")
    parser.add_argument("--naive-events", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rebuild-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def customer_key(number: int) -> str:
    return f"c-{number:06d}"


def generate(ledger: Ledger, messages: int, customers: int, heavy: int) -> None:
    """Customers, then messages (Queued, Sent, Delivered) in 1,000-message saves."""
    rng = random.Random(7)
    company = Company._create(
        Company.Registered,
        id=Company.id_for(TENANT),
        tenant_id=TENANT,
        name="Bench Dental",
        email_sender="office@bench.example",
        sms_sender="+12015550100",
        default_region="US",
    )
    batch: list[Any] = [company]
    for number in range(customers):
        batch.append(
            Customer._create(
                Customer.Registered,
                id=Customer.id_for(TENANT, customer_key(number)),
                tenant_id=TENANT,
                customer_id=customer_key(number),
                name=f"Customer {number}",
                customer_type=rng.choice(["individual", "business"]),
                email=f"customer{number}@example.com",
                cell_phone=None,
            )
        )
        if len(batch) >= 1000:
            ledger.save(*batch)
            batch = []
    ledger.save(*batch)

    batch = []
    for number in range(messages):
        owner = 0 if number < heavy else rng.randrange(1, customers)
        batch.append(one_message(rng, owner))
        if len(batch) >= 1000:
            ledger.save(*batch)
            batch = []
    if batch:
        ledger.save(*batch)


def one_message(rng: random.Random, owner: int) -> Message:
    words = rng.sample(WORDS, 6)
    message = Message._create(
        Message.Queued,
        id=uuid.uuid4(),
        tenant_id=TENANT,
        customer_id=customer_key(owner),
        occurred_at=datetime.now(UTC),
        direction="outbound",
        channel="email",
        category="transactional",
        sender="office@bench.example",
        to=[f"customer{owner}@example.com"],
        cc=[],
        bcc=[],
        subject=" ".join(words[:3]).capitalize(),
        text=f"Hello,\nyour {words[3]} {words[4]} on {words[5]}.\nBench Dental",
        html=None,
        template_id=rng.choice(["recall", "invoice", None]),
        template_version=1,
        merge_values={},
        attachments=[],
        sent_by={"user_id": "bench.user", "trigger": None},
        idempotency_key=None,
        fingerprint="",
        sms_encoding=None,
        sms_segments=None,
        resend_of=None,
    )
    now = datetime.now(UTC)
    message.record_provider_event(
        Message.Sent,
        occurred_at=now,
        provider="smtp",
        provider_event_id=None,
        detail={},
        provider_message_id=f"<{message.id}@bench.example>",
        accepted=message.to,
        refused={},
    )
    outcome = rng.random()
    if outcome < 0.9:
        message.record_provider_event(
            Message.Delivered,
            occurred_at=now,
            provider="smtp",
            provider_event_id=None,
            detail={},
            recipient=None,
        )
    else:
        message.record_provider_event(
            Message.Bounced,
            occurred_at=now,
            provider="smtp",
            provider_event_id=None,
            detail={},
            recipient=None,
            hard=True,
            status_code="5.1.1",
            diagnostic="no such user",
        )
    return message


def rate_of(ledger: Ledger, first: int, events: int, per_transaction: int) -> float:
    """Events/s projecting `events` events from position `first` on."""
    views = open_views(ledger.env)
    prepare_registry(views)
    projection = projection_named("timeline")
    generation = start_generation(views, projection, active=True)
    views.execute(
        "UPDATE projection_generations SET position = ?, active = 0 "
        "WHERE name = 'timeline' AND generation = ?",
        [first - 1, generation],
    )
    runner = ProjectionRunner(
        ledger,
        views,
        projection,
        generation=generation,
        events_per_transaction=per_transaction,
    )
    started = time.perf_counter()
    while runner.position < first - 1 + events:
        page = ledger.recorder.select_notifications(runner.position + 1, 1000)
        if not page:
            break
        for start in range(0, len(page), per_transaction):
            runner.commit(page[start : start + per_transaction])
    elapsed = time.perf_counter() - started
    views.close()
    return (runner.position - first + 1) / elapsed


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(action: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def rebuild_child(url: str) -> None:
    """Rebuild the timeline here, sampling this process's resident memory."""
    ledger = Ledger(env=store_environment(url))
    views = open_views(ledger.env)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            statm = Path("/proc/self/statm").read_text().split()
            samples.append(int(statm[1]) * 4096 // (1024 * 1024))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    cpu = time.process_time()
    rebuild(ledger, views, projection_named("timeline"))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    done.set()
    sampler.join()
    events = ledger.recorder.max_notification_id() or 0
    print(
        json.dumps(
            {"seconds": elapsed, "cpu": cpu, "events": events, "rss_mb": samples}
        )
    )


def url_schema(url: str) -> str:
    """The schema named in a PostgreSQL URL's query (public without one)."""
    for pair in url.partition("?")[2].split("&"):
        name, _, value = pair.partition("=")
        if name == "schema":
            return value
    return "public"


def main() -> None:
    args = parse()
    schema = None
    url = args.database_url
    if url is None:
        schema = f"bench_read_{uuid.uuid4().hex[:8]}"
        # A small pool: the server's connections are shared with the team.
        url = f"{SERVER}?schema={schema}&pool_size=2"
    if args.rebuild_child:
        rebuild_child(url)
        return
    prepare_store(url)
    ledger = Ledger(env=store_environment(url))
    try:
        report(args, url, ledger)
    finally:
        ledger.close()
        if schema and not args.keep:
            with psycopg.connect(SERVER, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(args: argparse.Namespace, url: str, ledger: Ledger) -> None:
    started = time.perf_counter()
    generate(ledger, args.messages, args.customers, args.heavy)
    # As autovacuum would on a quiet server: without row counts the planner
    # reads a customer's few events with a parallel scan (~170 ms at 3.1M).
    if url.startswith("postgresql"):
        with psycopg.connect(url.partition("?")[0], autocommit=True) as connection:
            connection.execute(f'ANALYZE "{url_schema(url)}".ledger_events')
    events = ledger.recorder.max_notification_id() or 0
    print(
        f"store: {url.split('?')[0]} ({url.split('?')[-1]}); {args.messages:,} "
        f"messages over {args.customers:,} customers; {events:,} events "
        f"generated in {time.perf_counter() - started:.1f} s"
    )

    # Messages' events follow the company's and customers' registrations; both
    # ways project the same window of them, with indexes in place.
    first = args.customers + 2
    sample = min(args.naive_events, events - first + 1)
    naive = rate_of(ledger, first, sample, 1)
    batched = rate_of(ledger, first, sample, 1000)
    print(
        f"catch-up over {sample:,} message events: {batched:,.0f} events/s in "
        f"1,000-event transactions vs {naive:,.0f} events/s one per event "
        f"({batched / naive:.1f}x)"
    )

    child = subprocess.run(
        [sys.executable, __file__, "--rebuild-child", "--database-url", url],
        capture_output=True,
        text=True,
        check=True,
    )
    rebuilt = json.loads(child.stdout.strip().splitlines()[-1])
    rss = rebuilt["rss_mb"] or [0]
    quarters = [rss[min(len(rss) - 1, len(rss) * q // 4)] for q in range(1, 5)]
    print(
        f"rebuild of {rebuilt['events']:,} events: {rebuilt['seconds']:.1f} s "
        f"({rebuilt['events'] / rebuilt['seconds']:,.0f} events/s; one per event "
        f"would take ~{rebuilt['events'] / naive:,.0f} s); the projection "
        f"process used {rebuilt['cpu']:.1f} s of CPU; resident memory "
        f"at 1/4..4/4: {quarters} MB, peak {max(rss)} MB"
    )

    views = open_views(ledger.env)
    rng = random.Random(11)

    def page() -> object:
        who = customer_key(rng.randrange(args.customers))
        return customer_timeline(ledger, views, STAFF, who)

    def search() -> object:
        who = customer_key(rng.randrange(1, args.customers))
        words = TimelineFilter(search=rng.choice(WORDS))
        return customer_timeline(ledger, views, STAFF, who, words)

    def scan() -> object:
        return customer_messages(ledger, STAFF, customer_key(1))

    pages = timed(page, args.queries)
    searches = timed(search, args.queries)
    scans = timed(scan, 3)
    print(
        f"timeline page (50 rows + count) p50 {statistics.median(pages):.2f} ms, "
        f"p99 {percentile(pages, 0.99):.2f} ms vs reading the log "
        f"{statistics.median(scans):,.0f} ms"
    )
    print(
        f"search (one word, one customer) p50 {statistics.median(searches):.2f} ms, "
        f"p99 {percentile(searches, 0.99):.2f} ms vs reading the log "
        f"{statistics.median(scans):,.0f} ms"
    )

    index = TimelineIndex(views, ledger)
    now = datetime.now(UTC)
    heavy = customer_key(0)
    cpu = time.process_time()
    indexed = timed(lambda: replay_customer(ledger, STAFF, heavy, now, index), 5)
    replay_cpu = (time.process_time() - cpu) / 5 * 1000
    scanned = timed(lambda: replay_customer(ledger, STAFF, heavy, now), 2)
    print(
        f"replay of a customer with {args.heavy:,} messages: "
        f"{statistics.median(indexed):,.0f} ms ({replay_cpu:,.0f} ms of CPU) with "
        "timeline ids vs "
        f"{statistics.median(scanned):,.0f} ms scanning the log"
    )
    views.close()


if __name__ == "__main__":
    main()
