"""Fixtures: a ledger on each real backend, and the people who use it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.blobs import FileBlobStore
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, UpsertCustomer
from ledger.values import Permission, Principal
from projections.database import ViewDatabase, open_views

POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
RUN_ID = uuid.uuid4().hex[:8]


def postgres_url(schema: str) -> str:
    return f"{POSTGRES_URL}?schema={schema}"


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards."""
    schema = f"t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    prepare_store(postgres_url(schema))
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    schema = request.getfixturevalue("postgres_schema")
    return postgres_url(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    return database_url(request.param, tmp_path, request)


@pytest.fixture
def ledger(ledger_url: str, tmp_path: Path) -> Iterator[Ledger]:
    app = Ledger(
        env=store_environment(ledger_url), blobs=FileBlobStore(tmp_path / "blobs")
    )
    yield app
    app.close()


@pytest.fixture
def staff() -> Principal:
    return Principal("brightside", "maria.lopez", frozenset(Permission), "Maria Lopez")


@pytest.fixture
def viewer() -> Principal:
    return Principal("brightside", "sam.reader", frozenset({Permission.VIEW}))


@pytest.fixture
def outsider() -> Principal:
    return Principal("rival-clinic", "eve", frozenset(Permission))


@pytest.fixture
def company(ledger: Ledger, staff: Principal) -> None:
    register_company(
        ledger,
        staff,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )


@pytest.fixture
def ada(ledger: Ledger, staff: Principal, company: None) -> str:
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id="c-ada",
            name="Ada Fernsby",
            email="ada.fernsby@example.com",
            cell_phone="+12015550111",
        ),
    )
    return "c-ada"


@pytest.fixture
def farid(ledger: Ledger, staff: Principal, company: None) -> str:
    """A customer with a phone but no email."""
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id="c-farid", name="Farid Haddad", cell_phone="2015550116"
        ),
    )
    return "c-farid"


@pytest.fixture
def views(ledger: Ledger) -> Iterator[ViewDatabase]:
    """The read models' database beside the ledger's event store."""
    database = open_views(ledger.env)
    yield database
    database.close()
