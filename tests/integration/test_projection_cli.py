"""The read side's commands as an operator runs them, on an embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from adapters.store import store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.send import send_message
from ledger.values import Channel, Permission, Principal

STAFF = Principal("demo", "maria.lopez", frozenset(Permission))


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A store with one customer and two emails, and the environment to reach it."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger = Ledger(env=store_environment(url))
    register_company(
        ledger, STAFF, RegisterCompany(name="Demo", email_sender="office@demo.example")
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(customer_id="c-ada", name="Ada", email="ada@example.com"),
    )
    for subject in ("Crown fitting", "Invoice"):
        send_message(
            ledger,
            STAFF,
            SendMessage(
                customer_id="c-ada", channel=Channel.EMAIL, subject=subject, body="Hi"
            ),
        )
    ledger.close()
    return {
        "LEDGER_DATABASE_URL": url,
        "LEDGER_BLOB_DIR": str(tmp_path / "blobs"),
        "LEDGER_COMPANY": "demo",
        "LEDGER_USER": "maria.lopez",
        "COLUMNS": "160",
    }


def ledger_cli(home: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=home)
    return result.exit_code, result.output


def test_the_listing_reads_the_timeline_with_filters_and_pages(home):
    code, output = ledger_cli(home, "messages", "c-ada", "--json", "--limit", "1")
    first = json.loads(output)
    _, output = ledger_cli(
        home, "messages", "c-ada", "--json", "--after", first["next_cursor"]
    )
    second = json.loads(output)
    _, output = ledger_cli(home, "messages", "c-ada", "--json", "--search", "crown")
    found = json.loads(output)

    assert code == 0
    assert first["count"] == 2 and len(first["messages"]) == 1
    assert second["messages"][0]["subject"] == "Crown fitting"
    assert second["next_cursor"] is None
    assert [m["subject"] for m in found["messages"]] == ["Crown fitting"]


def test_a_worker_catches_up_and_status_shows_no_lag(home):
    code, _ = ledger_cli(home, "worker", "project", "all", "--once")
    _, output = ledger_cli(home, "projections", "status", "--json")

    states = {state["name"]: state for state in json.loads(output)}
    assert code == 0
    assert states["timeline"]["lag"] == 0
    assert states["reporting"]["lag"] == 0
    assert states["timeline"]["skipped"] == []


def test_a_rebuild_switches_to_a_new_generation(home):
    ledger_cli(home, "worker", "project", "timeline", "--once")

    code, output = ledger_cli(home, "projections", "rebuild", "timeline")

    assert code == 0
    assert "now serves generation 2" in output


def test_an_unknown_projection_is_refused_in_one_sentence(home):
    code, output = ledger_cli(home, "projections", "rebuild", "inbox")

    assert code == 1
    assert "There is no projection 'inbox'; choose one of:" in output


def test_replay_and_report_answer_from_the_command_line(home):
    code, output = ledger_cli(
        home, "replay", "c-ada", "--as-of", "2999-01-01T00:00Z", "--json"
    )
    replayed = json.loads(output)
    report_code, report = ledger_cli(home, "report", "funnel")

    assert code == 0
    assert len(replayed["messages"]) == 2
    assert replayed["messages"][0]["events"][0]["event"] == "Queued"
    assert report_code == 0
    assert report.splitlines()[1].startswith("email,none,2,0,")


def test_a_replay_time_without_a_zone_is_refused(home):
    code, output = ledger_cli(home, "replay", "c-ada", "--as-of", "2026-01-01")

    assert code == 1
    assert "has no time zone" in output
