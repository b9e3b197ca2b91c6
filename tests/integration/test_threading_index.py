"""Inbound threading reads the directory and timeline views, then the log's tail.

Whatever the views have or have not reached, the answers must be the ones a
scan of the whole log gives.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.store import store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.send import send_message
from commands.threading import customers_owning, latest_outbound, normal_subject
from ledger.values import Channel, Permission, Principal
from projections.catalog import projection_named
from projections.database import ViewDatabase
from projections.runtime import ProjectionRunner
from projections.threading_index import ThreadingViews

TENANTS = ("brightside", "rival-clinic")
ADDRESSES = ("ada@example.com", "bea@example.com", "shared@example.com")
PHONES = ("+12015550111", "+12015550122")
SUBJECTS = ("Your visit", "Re: Your visit", "Invoice 7")


def principal_of(tenant_id: str) -> Principal:
    return Principal(tenant_id, "maria.lopez", frozenset(Permission), "Maria Lopez")


def open_company(ledger: Ledger, tenant_id: str) -> None:
    register_company(
        ledger,
        principal_of(tenant_id),
        RegisterCompany(
            name=f"{tenant_id} office",
            email_sender=f"office@{tenant_id}.example",
            sms_sender="+12015550100",
        ),
    )


def catch_up(ledger: Ledger, views: ViewDatabase) -> None:
    for name in ("directory", "timeline"):
        ProjectionRunner(ledger, views, projection_named(name)).catch_up()


def answers(ledger: Ledger) -> list[object]:
    """Every threading lookup the scenario can ask, in a fixed order."""
    found: list[object] = []
    for tenant_id in TENANTS:
        for address in ADDRESSES:
            found.append(customers_owning(ledger, tenant_id, Channel.EMAIL, address))
        for phone in PHONES:
            found.append(customers_owning(ledger, tenant_id, Channel.SMS, phone))
        for customer in ("c-1", "c-2", "c-3"):
            for subject in SUBJECTS:
                wanted = normal_subject(subject)
                found.append(
                    latest_outbound(
                        ledger,
                        tenant_id,
                        customer,
                        Channel.EMAIL,
                        lambda message, w=wanted: normal_subject(message.subject) == w,
                    )
                )
    return found


def scanned(ledger: Ledger) -> list[object]:
    """The same answers with the index set aside: the whole log read."""
    index, ledger.threading_index = ledger.threading_index, None
    try:
        return answers(ledger)
    finally:
        ledger.threading_index = index


@pytest.fixture
def indexed(ledger: Ledger) -> Iterator[Ledger]:
    ledger.threading_index = ThreadingViews(ledger.env)
    for tenant_id in TENANTS:
        open_company(ledger, tenant_id)
    yield ledger


def test_before_any_projection_ran_the_index_defers_to_the_log(indexed: Ledger):
    upsert_customer(
        indexed,
        principal_of("brightside"),
        UpsertCustomer(customer_id="c-1", name="Ada Fernsby", email=ADDRESSES[0]),
    )

    assert indexed.threading_index is not None
    assert indexed.threading_index.address_owners("brightside", "email", "x") is None
    assert customers_owning(indexed, "brightside", Channel.EMAIL, ADDRESSES[0]) == [
        "c-1"
    ]


def test_answers_join_the_views_and_the_changes_they_have_not_reached(
    indexed: Ledger, views: ViewDatabase
):
    staff = principal_of("brightside")
    upsert_customer(
        indexed,
        staff,
        UpsertCustomer(customer_id="c-1", name="Ada Fernsby", email=ADDRESSES[0]),
    )
    upsert_customer(
        indexed,
        principal_of("rival-clinic"),
        UpsertCustomer(customer_id="c-9", name="Ada Elsewhere", email=ADDRESSES[0]),
    )
    first = send_message(
        indexed,
        staff,
        SendMessage(
            customer_id="c-1", channel=Channel.EMAIL, subject="Your visit", body="Hi"
        ),
    )
    catch_up(indexed, views)

    # After the views' position: Ada moves address, Bea takes her old one,
    # and a later message shares the first one's subject.
    upsert_customer(
        indexed,
        staff,
        UpsertCustomer(customer_id="c-1", name="Ada Fernsby", email=ADDRESSES[1]),
    )
    upsert_customer(
        indexed,
        staff,
        UpsertCustomer(customer_id="c-2", name="Bea Lund", email=ADDRESSES[0]),
    )
    later = send_message(
        indexed,
        staff,
        SendMessage(
            customer_id="c-1", channel=Channel.EMAIL, subject="Your visit", body="Hi"
        ),
    )

    def visit(message: object) -> bool:
        return normal_subject(getattr(message, "subject", None)) == "your visit"

    assert customers_owning(indexed, "brightside", Channel.EMAIL, ADDRESSES[0]) == [
        "c-2"
    ]
    assert customers_owning(indexed, "brightside", Channel.EMAIL, ADDRESSES[1]) == [
        "c-1"
    ]
    assert (
        latest_outbound(indexed, "brightside", "c-1", Channel.EMAIL, visit)
        == later.message_id
    )
    assert later.message_id != first.message_id
    assert answers(indexed) == scanned(indexed)

    catch_up(indexed, views)
    owners = indexed.threading_index.address_owners("brightside", "email", ADDRESSES[0])
    assert owners is not None and sorted(owners[0].values()) == ["c-2"]
    assert answers(indexed) == scanned(indexed)


# One step of a scenario: (tenant, customer, email, phone) to upsert, or
# (tenant, customer, subject) to send, or None to bring the views up to date.
Step = tuple[str, str, str | None, str | None] | tuple[str, str, str] | None

steps = st.one_of(
    st.tuples(
        st.sampled_from(TENANTS),
        st.sampled_from(("c-1", "c-2", "c-3")),
        st.sampled_from((*ADDRESSES, None)),
        st.sampled_from((*PHONES, None)),
    ),
    st.tuples(
        st.sampled_from(TENANTS),
        st.sampled_from(("c-1", "c-2", "c-3")),
        st.sampled_from(SUBJECTS),
    ),
    st.none(),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=st.lists(steps, max_size=14))
def test_any_history_threads_alike_with_and_without_the_index(scenario: list[Step]):
    with tempfile.TemporaryDirectory() as home:
        env = store_environment(f"sqlite:///{Path(home) / 'ledger.sqlite'}")
        ledger = Ledger(env=env, threading_index=ThreadingViews(env))
        try:
            run_scenario(ledger, scenario)
        finally:
            ledger.close()


def run_scenario(ledger: Ledger, scenario: list[Step]) -> None:
    for tenant_id in TENANTS:
        open_company(ledger, tenant_id)
    registered: set[tuple[str, str]] = set()
    views = ledger.threading_index.views()  # type: ignore[union-attr]
    for step in scenario:
        if step is None:
            catch_up(ledger, views)
        elif len(step) == 4:
            tenant_id, customer, email, phone = step
            upsert_customer(
                ledger,
                principal_of(tenant_id),
                UpsertCustomer(
                    customer_id=customer,
                    name=f"Customer {customer}",
                    email=email,
                    cell_phone=phone,
                ),
            )
            registered.add((tenant_id, customer))
        else:
            tenant_id, customer, subject = step
            if (tenant_id, customer) not in registered:
                continue
            try:
                send_message(
                    ledger,
                    principal_of(tenant_id),
                    SendMessage(
                        customer_id=customer,
                        channel=Channel.EMAIL,
                        subject=subject,
                        body="Hello",
                    ),
                )
            except Exception as refused:
                # A customer with no email on file cannot be emailed.
                assert "no email address" in str(refused)
        assert answers(ledger) == scanned(ledger)
