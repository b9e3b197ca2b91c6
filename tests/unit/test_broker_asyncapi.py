"""docs/asyncapi.yaml says what the worker's declarations say."""

from __future__ import annotations

import yaml

from adapters.broker.asyncapi import DOCUMENT, REGENERATE, asyncapi_document, render
from adapters.broker.settings import BrokerSettings


def test_the_committed_asyncapi_document_matches_the_workers_declarations() -> None:
    written = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))

    built = asyncapi_document(BrokerSettings())

    assert written == built, (
        f"{DOCUMENT.name} is stale: regenerate it with `{REGENERATE}` and commit it."
    )


def test_the_asyncapi_document_renders_alike_whatever_its_key_order() -> None:
    document = asyncapi_document(BrokerSettings())
    reordered = dict(reversed(list(document.items())))
    reordered["channels"] = dict(reversed(list(document["channels"].items())))

    assert render(reordered) == render(document)


def test_the_asyncapi_document_describes_the_default_pull_consumers() -> None:
    channels = asyncapi_document(BrokerSettings())["channels"]

    send = channels["SendMessage"]

    assert "queue" not in send["bindings"]["nats"]
    assert "durable pull consumer LEDGER_send " in send["description"]
