"""`ledger serve` on a fresh machine: embedded store, demo company, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.serve import DEMO_PASSWORD, Supervisor, workers_for
from adapters.wiring import Settings, build_ledger
from commands.directory import register_company, upsert_customer
from commands.identity import IssueToken, issue_token
from commands.models import RegisterCompany, UpsertCustomer
from ledger.message import Message
from ledger.values import Permission, Principal
from tests.e2e.conftest import sign_in_form

LEDGER = Path(sys.executable).with_name("ledger")
STARTUP_SECONDS = 90
STAFF = Principal("brightside", "maria.lopez", frozenset(Permission), "Maria Lopez")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "LEDGER_HOME": str(home), "LEDGER_COMPANY": "demo"}
    env.pop("LEDGER_DATABASE_URL", None)
    return env


def wait_until_up(
    url: str, process: subprocess.Popen[str] | subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("ledger serve did not start")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A `ledger serve` process on a free port; yields its URL and home."""
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    process = subprocess.Popen(
        [str(LEDGER), "serve", "--port", str(port)],
        env=environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    yield url, home
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output


def ledger_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LEDGER), *args],
        env={**environment(home), "LEDGER_NEW_PASSWORD": "nadia's long password"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_opens_the_demo_messages_tab_after_sign_in(served):
    url, _ = served

    with httpx.Client(base_url=url) as client:
        signed_in = client.post(
            "/login",
            data={
                "login": "maria",
                "password": DEMO_PASSWORD,
                "next": "/demo/customers/c-1001/customer-messages",
                "csrf_token": sign_in_form(client),
            },
            follow_redirects=True,
        )
        document = client.get("/openapi.json")

    assert signed_in.status_code == 200
    assert "Ada Fernsby" in signed_in.text
    assert "+ New Message" in signed_in.text
    assert document.json()["info"]["title"] == "Message ledger"


def test_metrics_count_webhook_answers_and_report_projection_lag(served):
    url, _ = served

    refused = httpx.post(f"{url}/webhooks/demo/sendgrid/events", content=b"[]")
    metrics = httpx.get(f"{url}/metrics").text

    assert refused.status_code == 401
    assert (
        'ledger_webhook_events_total{path="/webhooks/{tenant}/sendgrid/events",'
        'status="4xx"} 1.0'
    ) in metrics
    assert 'ledger_projection_lag_events{projection="timeline"}' in metrics
    failed = next(
        line
        for line in metrics.splitlines()
        if line.startswith('ledger_messages{stage="failed"}')
    )
    assert float(failed.split()[-1]) >= 1


def test_a_token_issued_on_the_command_line_opens_the_api(served):
    url, home = served

    issued = ledger_cli(
        home, "tokens", "issue", "billing", "--permission", "messages:view"
    )
    token = issued.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    allowed = httpx.get(f"{url}/api/demo/templates", headers=auth)
    threads = httpx.get(f"{url}/api/demo/customers/c-1001/threads", headers=auth)
    report = httpx.get(f"{url}/api/demo/reports/status", headers=auth)
    refused = httpx.post(
        f"{url}/api/demo/sms/segments",
        json={"body": "hi"},
        headers={"Authorization": "Bearer mlt_0_x"},
    )

    assert issued.returncode == 0, issued.stderr
    assert allowed.status_code == 200
    assert len(allowed.json()) == 3
    assert threads.status_code == 200 and threads.json()["threads"]
    assert report.status_code == 200 and report.json()["total"] > 0
    assert refused.status_code == 401


def test_a_user_added_on_the_command_line_can_sign_in(served):
    url, home = served

    added = ledger_cli(home, "users", "add", "nadia", "--name", "Nadia Rahman")
    with httpx.Client(base_url=url) as client:
        signed_in = client.post(
            "/login",
            data={
                "login": "nadia",
                "password": "nadia's long password",
                "csrf_token": sign_in_form(client),
            },
        )

    assert added.returncode == 0, added.stderr
    assert "nadia of demo can sign in" in added.stdout
    assert signed_in.status_code == 303


def test_serve_runs_the_broker_only_when_nats_is_configured(tmp_path):
    settings = Settings.from_env({"LEDGER_HOME": str(tmp_path)})

    plain = workers_for(settings, {})
    with_nats = workers_for(settings, {"LEDGER_NATS_URL": "nats://127.0.0.1:4222"})

    assert set(plain) == {
        "dispatcher",
        "provider-links",
        "projection-timeline",
        "projection-reporting",
        "projection-directory",
    }
    assert set(with_nats) == set(plain) | {"broker"}


def test_the_supervisor_stops_every_worker_it_started():
    finished: list[str] = []
    supervisor = Supervisor()
    for name in ("first", "second"):
        supervisor.start(name, lambda stop, n=name: (stop.wait(), finished.append(n)))

    supervisor.shutdown()

    assert sorted(finished) == ["first", "second"]


def test_a_stop_during_sends_loses_no_acknowledged_message(tmp_path):
    database = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    settings = Settings.from_env({"LEDGER_DATABASE_URL": database})
    ledger = build_ledger(settings)
    register_company(
        ledger,
        STAFF,
        RegisterCompany(
            name="Brightside Dental", email_sender="office@brightside.example"
        ),
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(
            customer_id="c-ada", name="Ada Fernsby", email="ada@example.com"
        ),
    )
    token = issue_token(
        ledger, STAFF, IssueToken(name="load", permissions=[Permission.CREATE])
    ).text
    ledger.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(LEDGER), "serve", "--port", str(port)],
        env={**environment(tmp_path), "LEDGER_DATABASE_URL": database},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_up(url, process)
    acknowledged: list[str] = []

    def send(number: int) -> None:
        try:
            response = httpx.post(
                f"{url}/api/brightside/messages",
                json={
                    "customer_id": "c-ada",
                    "channel": "email",
                    "subject": f"Reminder {number}",
                    "body": "See you soon.",
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        except httpx.TransportError:
            return
        if response.status_code == 201:
            acknowledged.append(response.json()["message_id"])

    senders = [threading.Thread(target=send, args=(n,)) for n in range(20)]
    for sender in senders:
        sender.start()
    while not acknowledged:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    for sender in senders:
        sender.join()
    process.wait(timeout=60)

    ledger = build_ledger(settings)
    recorded = [
        ledger.load(Message, uuid.UUID(message_id)) for message_id in acknowledged
    ]
    ledger.close()
    assert process.returncode == 0
    assert all(message is not None for message in recorded)


def test_the_supervisor_restarts_a_worker_that_failed(monkeypatch):
    monkeypatch.setattr("adapters.serve.RESTART_SECONDS", 0.01)
    runs: list[int] = []
    supervisor = Supervisor()

    def flaky(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("the database went away")

    supervisor.start("flaky", flaky)
    supervisor.threads[0].join(5)

    assert len(runs) == 3
