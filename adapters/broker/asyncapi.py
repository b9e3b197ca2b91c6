"""The broker's AsyncAPI document, built from the worker's own declarations.

    .venv/bin/python -m adapters.broker.asyncapi            # writes docs/asyncapi.yaml
    .venv/bin/python -m adapters.broker.asyncapi --check    # fails if it is stale

The committed document is built under the default settings, whatever the
environment says, and written with its keys sorted, so that the same
declarations always give the same file. `asyncapi_app` serves the settings of
the environment instead (`faststream docs serve adapters.broker.asyncapi:asyncapi_app
--factory`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from faststream import FastStream
from faststream.specification import AsyncAPI

from adapters.broker.settings import BrokerSettings
from adapters.broker.worker import build_broker

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
REGENERATE = ".venv/bin/python -m adapters.broker.asyncapi"


def documented_app(settings: BrokerSettings) -> FastStream:
    """The faststream app whose specification describes the broker interface."""
    broker = build_broker(settings, for_documentation=True)
    return FastStream(
        broker,
        specification=AsyncAPI(
            title="Message ledger broker interface",
            version="1",
            description="Commands and trigger events into the message ledger, "
            "and message status changes out of it. Subjects start with "
            "<root>.<tenant>; see docs/broker.md.",
        ),
    )


def asyncapi_app() -> FastStream:
    """The interface under the environment's settings, for `faststream docs …`."""
    return documented_app(BrokerSettings.from_env())


def asyncapi_document(settings: BrokerSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI document as plain data; the default settings unless given."""
    app = documented_app(settings or BrokerSettings())
    if app.schema is None:
        raise RuntimeError("The faststream app was built without a specification.")
    document: dict[str, Any] = app.schema.to_specification().to_jsonable()
    return document


def render(document: dict[str, Any]) -> str:
    """The document as YAML, keys sorted at every level."""
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=88)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.broker.asyncapi",
        description="Write the broker's AsyncAPI document under the default settings.",
    )
    parser.add_argument("--out", type=Path, default=DOCUMENT)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if the file differs from the declarations",
    )
    args = parser.parse_args(argv)
    document = asyncapi_document()
    if args.check:
        written = yaml.safe_load(args.out.read_text(encoding="utf-8"))
        if written != document:
            print(f"{args.out} is stale; regenerate it with {REGENERATE}.")
            return 1
        return 0
    args.out.write_text(render(document), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
