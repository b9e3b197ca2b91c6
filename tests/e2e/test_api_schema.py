"""The API against its own OpenAPI document: no 5xx, nothing off the schema.

Schemathesis generates requests for every operation from /openapi.json and
checks each answer against the document. Examples are bounded so the run stays
short; the company in the path is the token's own, so requests get past
scoping into the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.blobs import FileBlobStore
from adapters.http import WebSettings, create_app
from adapters.http.openapi import document_text
from adapters.http.projected import ProjectionReads
from adapters.store import store_environment
from adapters.wiring import Settings
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.identity import IssueToken, issue_token
from commands.models import RegisterCompany, SaveTemplate, UpsertCustomer
from commands.templates import save_template
from ledger.values import Channel, Permission, Principal

COMPANY = "brightside"
CUSTOMER = "c-ada"
STAFF = Principal(COMPANY, "maria.lopez", frozenset(Permission), "Maria Lopez")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """`ledger serve`'s app over a small company, and a token that may do anything."""
    home = tmp_path_factory.mktemp("schema")
    env = store_environment(f"sqlite:///{home / 'ledger.sqlite'}")
    ledger = Ledger(env=env, blobs=FileBlobStore(home / "blobs"))
    reads = ProjectionReads(env)
    register_company(
        ledger,
        STAFF,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(
            customer_id="c-ada",
            name="Ada Fernsby",
            email="ada.fernsby@example.com",
            cell_phone="+12015550111",
        ),
    )
    save_template(
        ledger,
        STAFF,
        SaveTemplate(
            template_id="hello", channel=Channel.SMS, body="Hi {{ customer_name }}"
        ),
    )
    token = issue_token(
        ledger, STAFF, IssueToken(name="fuzz", permissions=list(Permission))
    )
    app = create_app(
        ledger,
        WebSettings(session_secret=b"z" * 64),
        timeline=reads.timeline,
        reports=reads.delivery_report,
        threads=reads.threads,
        status=reads.status_report,
        providers=Settings.from_env({}),
    )
    yield app, token.text
    reads.close()
    ledger.close()


@pytest.fixture(scope="module")
def api_schema(seeded: tuple[Any, str]) -> Any:
    app, _ = seeded
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def steer(case: Any) -> None:
    """Aim generated requests at the seeded company and customer, past the 404s."""
    if case.path_parameters and "company" in case.path_parameters:
        case.path_parameters["company"] = COMPANY
    if case.path_parameters and "customer_id" in case.path_parameters:
        case.path_parameters["customer_id"] = CUSTOMER
    if isinstance(case.body, dict) and "customer_id" in case.body:
        case.body["customer_id"] = CUSTOMER


DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"


def documented_operations() -> list[tuple[str, str]]:
    paths = json.loads(DOCUMENT.read_text(encoding="utf-8"))["paths"]
    return [(path, method) for path, item in paths.items() for method in item]


@pytest.mark.parametrize(("path", "method"), documented_operations())
def test_every_operation_answers_within_its_documented_schema(
    api_schema: Any, seeded: tuple[Any, str], path: str, method: str
) -> None:
    _, token = seeded
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def answers_within_schema(case: Any) -> None:
        steer(case)
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )

    answers_within_schema()


def test_the_openapi_document_in_docs_is_current(seeded: tuple[Any, str]) -> None:
    app, _ = seeded
    current = document_text(app)

    assert DOCUMENT.read_text(encoding="utf-8") == current, (
        "docs/openapi.json is stale; run `.venv/bin/python -m adapters.http.openapi`"
    )
