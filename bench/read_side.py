"""Read-side benchmark: projection catch-up, rebuild, timeline, search and replay.

Every figure is printed beside the naive way, measured in the same run:

- catch-up of the first --catch-up-events message events, 1,000 events per
  transaction, vs one transaction per event (the library runner's pattern)
  over the first --naive-events, both in a child process, with the CPU per
  event of the projection process and of its PostgreSQL backends;
- rebuild of the whole log, in a child process whose resident memory is
  sampled throughout;
- timeline page and search p99 from the view vs reading the log
  (commands.history.customer_messages, a few samples only: it is slow), and
  search within the customer with --heavy messages (a word of the bench's
  or one no message holds);
- replay of a customer with --heavy messages, ids from the timeline vs a
  scan of the whole log.

    .venv/bin/python bench/read_side.py --messages 100000 --customers 10000

The store is a fresh PostgreSQL schema (dropped afterwards unless --keep), or
the --database-url given. Events are encoded by the ledger's own mapper and
bulk-loaded with COPY (--generate copy, the default; see generate_by_copy),
or saved in 1,000-message save() batches (--generate save).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

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
    parser.add_argument(
        "--catch-up-events",
        type=int,
        default=100_000,
        help="window of the batched catch-up (the log's message events at most)",
    )
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--generate",
        choices=("copy", "save"),
        default="copy",
        help="load the events with one COPY (default) or through save() batches",
    )
    parser.add_argument("--rebuild-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--catch-up-child", help=argparse.SUPPRESS)
    return parser.parse_args()


def customer_key(number: int) -> str:
    return f"c-{number:06d}"


def directory(customers: int) -> list[Any]:
    """The company and its customers, as aggregates with pending events."""
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
    return [
        company,
        *(
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
            for number in range(customers)
        ),
    ]


MESSAGE_CHUNK = 1000
# A chunk of messages: the seed of its random choices, and whose they are.
MessageJob = tuple[int, list[int]]


def message_owners(messages: int, customers: int, heavy: int) -> list[int]:
    """Who each message is for: the first `heavy` are customer 0's."""
    rng = random.Random(7)
    return [
        0 if number < heavy else rng.randrange(1, customers)
        for number in range(messages)
    ]


def message_jobs(messages: int, customers: int, heavy: int) -> list[MessageJob]:
    """The messages in chunks, each with the seed its contents are drawn from."""
    owners = message_owners(messages, customers, heavy)
    return [
        (start, owners[start : start + MESSAGE_CHUNK])
        for start in range(0, messages, MESSAGE_CHUNK)
    ]


def chunk_messages(job: MessageJob) -> list[Message]:
    """One chunk's messages, with their events pending."""
    seed, owners = job
    rng = random.Random(seed)
    return [one_message(rng, owner) for owner in owners]


def generate_by_save(ledger: Ledger, messages: int, customers: int, heavy: int) -> None:
    """Customers, then messages (Queued, Sent, Delivered) in 1,000-message saves."""
    people = directory(customers)
    for start in range(0, len(people), MESSAGE_CHUNK):
        ledger.save(*people[start : start + MESSAGE_CHUNK])
    for job in message_jobs(messages, customers, heavy):
        ledger.save(*chunk_messages(job))


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
encoder: Ledger | None = None


def copy_rows(aggregates: list[Any]) -> bytes:
    """The aggregates' pending events as rows of PostgreSQL's binary COPY format.

    Each event is encoded by the ledger's own mapper; the rows hold the four
    columns the recorder writes, and the table's sequence numbers them in
    this order.
    """
    if encoder is None:
        raise RuntimeError("The encoding process has no ledger; set `encoder` first.")
    out = bytearray()
    for aggregate in aggregates:
        for event in aggregate.collect_events():
            stored = encoder.mapper.to_stored_event(event)
            topic = stored.topic.encode()
            originator = UUID(str(stored.originator_id))
            out += struct.pack("!hi16s", 4, 16, originator.bytes)
            out += struct.pack("!iq", 8, stored.originator_version)
            out += struct.pack("!i", len(topic)) + topic
            out += struct.pack("!i", len(stored.state)) + stored.state
    return bytes(out)


def encoded_messages(job: MessageJob) -> bytes:
    """One chunk of messages, generated and encoded in a worker process."""
    return copy_rows(chunk_messages(job))


def generate_by_copy(
    ledger: Ledger, url: str, messages: int, customers: int, heavy: int
) -> None:
    """The same aggregates' events, encoded by the ledger's mapper in one worker
    process per core and loaded with one COPY into the ledger's events table.

    What is stored is exactly what `save()` would store (same columns, same
    mapper, the table's own sequence numbering the rows in order, each
    message's events in version order); only the transport differs. The table
    is locked as the recorder locks it, so ids become visible in order.
    """
    global encoder
    encoder = ledger
    jobs = message_jobs(messages, customers, heavy)
    table = f'"{url_schema(url)}".ledger_events'
    statement = (
        f"COPY {table} (originator_id, originator_version, topic, state) "
        "FROM STDIN (FORMAT BINARY)"
    )
    # The workers are forked before the connection opens, so none of them
    # holds its socket.
    with (
        multiprocessing.get_context("fork").Pool() as pool,
        psycopg.connect(url.partition("?")[0], autocommit=True) as connection,
        connection.transaction(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        # The workers start on the messages while this process encodes the
        # directory, which comes first in the log.
        encoded = pool.imap(encoded_messages, jobs)
        with cursor.copy(statement) as copy:
            copy.write(COPY_HEADER)
            copy.write(copy_rows(directory(customers)))
            for rows in encoded:
                copy.write(rows)
            copy.write(COPY_TRAILER)


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


@dataclass(frozen=True)
class CatchUp:
    """One catch-up over a window of the log: wall time and CPU per event."""

    events: int
    seconds: float
    cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def per_event(self) -> str:
        """CPU per event of this process and, if readable, of its server backends."""
        mine = f"{self.cpu / self.events * 1e6:.1f} µs CPU/event here"
        if self.server_cpu is None:
            return mine
        return f"{mine}, {self.server_cpu / self.events * 1e6:.1f} in PostgreSQL"


def backend_cpu(pids: list[int]) -> float | None:
    """CPU seconds the server processes `pids` used so far (local server only)."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def catch_up_window(
    ledger: Ledger, first: int, events: int, per_transaction: int
) -> CatchUp:
    """Project `events` events from position `first` on into a fresh generation.

    One event per transaction is the library runner's pattern: read a page,
    then commit each event with the position on its own, in turn. Otherwise
    the runner's own catch-up (chunks of `per_transaction`, the next chunk
    prepared while the previous one is written).
    """
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
    last = first - 1 + events
    pids = server_pids(views)
    server = backend_cpu(pids)
    started, cpu = time.perf_counter(), time.process_time()
    if per_transaction == 1:
        while runner.position < last:
            page = runner.read_page(runner.position, last, ahead=False)
            for logged in page.events:
                runner.commit([logged], logged[0])
    else:
        runner.catch_up(until=last)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    pids = server_pids(views)
    server_after = backend_cpu(pids)
    views.close()
    used = None if server is None or server_after is None else server_after - server
    return CatchUp(runner.position - first + 1, elapsed, cpu, used)


def server_pids(views: Any) -> list[int]:
    """The server processes of the views' connections."""
    connections = [views.connection, getattr(views, "reading", None)]
    return [c.info.backend_pid for c in connections if c is not None]


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


def catch_up_child(url: str, first: int, sample: int, window: int) -> None:
    """Both catch-ups, in a process of their own, as a projection worker runs."""
    ledger = Ledger(env=store_environment(url))
    naive = catch_up_window(ledger, first, sample, 1)
    batched = catch_up_window(ledger, first, window, 1000)
    print(json.dumps([vars(naive), vars(batched)]))


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
    # The views' connections were opened for the rebuild: their backends'
    # whole CPU time is the server's share of it.
    server = backend_cpu(server_pids(views))
    done.set()
    sampler.join()
    events = ledger.recorder.max_notification_id() or 0
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "cpu": cpu,
                "server_cpu": server,
                "events": events,
                "rss_mb": samples,
            }
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
    if args.catch_up_child:
        first, sample, window = (int(n) for n in args.catch_up_child.split(","))
        catch_up_child(url, first, sample, window)
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
    if args.generate == "copy" and url.startswith("postgresql"):
        generate_by_copy(ledger, url, args.messages, args.customers, args.heavy)
    else:
        generate_by_save(ledger, args.messages, args.customers, args.heavy)
    # As autovacuum would on a quiet server: without row counts the planner
    # reads a customer's few events with a parallel scan (~170 ms at 3.1M).
    if url.startswith("postgresql"):
        with psycopg.connect(url.partition("?")[0], autocommit=True) as connection:
            connection.execute(f'ANALYZE "{url_schema(url)}".ledger_events')
    events = ledger.recorder.max_notification_id() or 0
    print(
        f"store: {url.split('?')[0]} ({url.split('?')[-1]}); {args.messages:,} "
        f"messages over {args.customers:,} customers; {events:,} events "
        f"generated by {args.generate} in {time.perf_counter() - started:.1f} s"
    )

    # Messages' events follow the company's and customers' registrations; both
    # ways project the same window of them, with indexes in place.
    first = args.customers + 2
    sample = min(args.naive_events, events - first + 1)
    window = min(args.catch_up_events, events - first + 1)
    caught_up = subprocess.run(
        [
            sys.executable,
            __file__,
            "--catch-up-child",
            f"{first},{sample},{window}",
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    naive, batched = (
        CatchUp(**fields)
        for fields in json.loads(caught_up.stdout.strip().splitlines()[-1])
    )
    print(
        f"catch-up over {batched.events:,} message events: {batched.rate:,.0f} "
        f"events/s in 1,000-event transactions ({batched.per_event()}) vs "
        f"{naive.rate:,.0f} events/s one per event over {naive.events:,} "
        f"({naive.per_event()}); {batched.rate / naive.rate:.1f}x"
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
        f"would take ~{rebuilt['events'] / naive.rate:,.0f} s); the projection "
        f"process used {rebuilt['cpu']:.1f} s of CPU "
        f"({rebuilt['cpu'] / rebuilt['events'] * 1e6:.1f} µs/event; PostgreSQL "
        f"{(rebuilt['server_cpu'] or 0) / rebuilt['events'] * 1e6:.1f}); "
        "resident memory "
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

    def heavy_search() -> object:
        words = TimelineFilter(search=rng.choice([*WORDS, "absent"]))
        return customer_timeline(ledger, views, STAFF, customer_key(0), words)

    pages = timed(page, args.queries)
    searches = timed(search, args.queries)
    heavy_searches = timed(heavy_search, max(args.queries // 10, 10))
    scans = timed(scan, 3)
    print(
        f"timeline page (50 rows + count) p50 {statistics.median(pages):.2f} ms, "
        f"p99 {percentile(pages, 0.99):.2f} ms vs reading the log "
        f"{statistics.median(scans):,.0f} ms"
    )
    print(
        f"search (one word, one customer) p50 {statistics.median(searches):.2f} ms, "
        f"p99 {percentile(searches, 0.99):.2f} ms vs reading the log "
        f"{statistics.median(scans):,.0f} ms; in the customer with "
        f"{args.heavy:,} messages p50 {statistics.median(heavy_searches):.2f} ms, "
        f"p99 {percentile(heavy_searches, 0.99):.2f} ms"
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
