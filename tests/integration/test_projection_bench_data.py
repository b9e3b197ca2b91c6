"""The read-side benchmark's bulk-loaded events are what the ledger itself stores."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from adapters.store import store_environment
from commands.application import Ledger
from ledger.directory import Customer
from ledger.message import Message
from ledger.values import Principal
from projections.catalog import projection_named
from projections.database import open_views
from projections.reading import customer_timeline
from projections.runtime import ProjectionRunner
from tests.conftest import postgres_url

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parents[2] / "bench" / "read_side.py"


@pytest.fixture(scope="module")
def read_side() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_read_side", BENCH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"Cannot load {BENCH}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shapes(ledger: Ledger) -> list[tuple[str, int]]:
    """Every stored event's topic and version, in log order."""
    return [
        (n.topic, n.originator_version)
        for n in ledger.recorder.select_notifications(1, 10_000)
    ]


def test_copied_events_decode_and_fold_like_saved_ones(read_side, postgres_schema):
    url = f"{postgres_url(postgres_schema)}&pool_size=2"
    ledger = Ledger(env=store_environment(url))

    read_side.generate_by_copy(ledger, url, messages=30, customers=4, heavy=5)

    notifications = ledger.recorder.select_notifications(1, 10_000)
    ids = [n.id for n in notifications]
    assert ids == list(range(1, 5 + 30 * 3 + 1))
    events = [ledger.mapper.to_domain_event(n) for n in notifications]
    assert {type(e) for e in events[5:]} >= {Message.Queued, Message.Sent}
    first_customer = ledger.load(Customer, events[1].originator_id)
    assert first_customer is not None and first_customer.customer_id == "c-000000"
    message = ledger.load(Message, events[5].originator_id)
    assert message is not None and message.status.value in {"delivered", "bounced"}
    ledger.close()


def heavy_customer_statuses(ledger: Ledger, staff: Principal) -> list[str]:
    """The statuses the timeline shows for customer 0, after catching up."""
    views = open_views(ledger.env)
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    page = customer_timeline(ledger, views, staff, "c-000000")
    views.close()
    return sorted(row["status"] for row in page.rows)


def test_copied_events_have_the_shape_and_outcomes_of_saved_ones(
    read_side, postgres_schema, tmp_path
):
    copied_url = f"{postgres_url(postgres_schema)}&pool_size=2"
    saved_url = f"sqlite:///{tmp_path / 'saved.sqlite'}"
    copied = Ledger(env=store_environment(copied_url))
    saved = Ledger(env=store_environment(saved_url))

    read_side.generate_by_copy(copied, copied_url, messages=40, customers=3, heavy=12)
    read_side.generate_by_save(saved, messages=40, customers=3, heavy=12)

    assert shapes(copied) == shapes(saved)
    statuses = heavy_customer_statuses(copied, read_side.STAFF)
    assert len(statuses) == 12
    assert statuses == heavy_customer_statuses(saved, read_side.STAFF)
    copied.close()
    saved.close()
