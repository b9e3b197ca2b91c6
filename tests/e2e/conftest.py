"""Fixtures for the HTTP API and the pages: an app over the `ledger` fixture."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.http import WebSettings, create_app
from adapters.http.projected import ProjectionReads
from adapters.store import store_environment
from commands.application import Ledger
from commands.directory import register_company
from commands.identity import AddUser, IssueToken, add_user, issue_token
from commands.models import RegisterCompany
from ledger.values import Permission, Principal

PASSWORD = "correct horse battery"
TOKEN_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def form_token(page: str) -> str:
    """The CSRF token a page's forms carry."""
    found = TOKEN_FIELD.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return found[1]


def sign_in_form(client: httpx.Client) -> str:
    """Open the sign-in form as a browser does; returns its CSRF token."""
    return form_token(client.get("/login").text)


@pytest.fixture
def web(ledger: Ledger) -> Iterator[TestClient]:
    """A client of the HTTP app over the test's ledger, following no redirects."""
    app = create_app(ledger, WebSettings(session_secret=b"s" * 64))
    with TestClient(app, follow_redirects=False) as client:
        yield client


def bearer(
    ledger: Ledger, principal: Principal, *permissions: Permission
) -> dict[str, str]:
    issued = issue_token(
        ledger, principal, IssueToken(name="billing", permissions=list(permissions))
    )
    return {"Authorization": f"Bearer {issued.text}"}


@pytest.fixture
def staff_auth(ledger: Ledger, staff: Principal, ada: str) -> dict[str, str]:
    """Headers of a service token holding both permissions."""
    return bearer(ledger, staff, Permission.VIEW, Permission.CREATE)


@pytest.fixture
def viewer_auth(ledger: Ledger, staff: Principal, ada: str) -> dict[str, str]:
    """Headers of a service token that may only read."""
    return bearer(ledger, staff, Permission.VIEW)


@pytest.fixture
def outsider_auth(ledger: Ledger, outsider: Principal) -> dict[str, str]:
    """Headers of a token of another company, with both permissions."""
    register_company(
        ledger,
        outsider,
        RegisterCompany(name="Rival Clinic", email_sender="desk@rival.example"),
    )
    return bearer(ledger, outsider, Permission.VIEW, Permission.CREATE)


@pytest.fixture
def staff_login(ledger: Ledger, staff: Principal, ada: str) -> str:
    """A staff user of Brightside who may send; returns the login."""
    add_user(
        ledger,
        staff,
        AddUser(
            login="maria",
            display_name="Maria Lopez",
            password=PASSWORD,
            permissions=[Permission.VIEW, Permission.CREATE],
        ),
    )
    return "maria"


@pytest.fixture
def viewer_login(ledger: Ledger, staff: Principal, ada: str) -> str:
    """A staff user of Brightside who may only read; returns the login."""
    add_user(
        ledger,
        staff,
        AddUser(
            login="sam",
            display_name="Sam Reader",
            password=PASSWORD,
            permissions=[Permission.VIEW],
        ),
    )
    return "sam"


@pytest.fixture
def projected_web(ledger: Ledger, ledger_url: str) -> Iterator[TestClient]:
    """A client of the app that reads timelines, threads and reports from the
    projections."""
    reads = ProjectionReads(store_environment(ledger_url))
    app = create_app(
        ledger,
        WebSettings(session_secret=b"s" * 64),
        timeline=reads.timeline,
        reports=reads.delivery_report,
        threads=reads.threads,
        status=reads.status_report,
    )
    with TestClient(app, follow_redirects=False) as client:
        yield client
    reads.close()
