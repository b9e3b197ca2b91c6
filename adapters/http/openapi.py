"""Writes the API's OpenAPI document to docs/openapi.json.

Run `python -m adapters.http.openapi` after changing a route or a schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from adapters.http.app import create_app
from adapters.http.settings import WebSettings
from adapters.wiring import Settings
from commands.application import Ledger

TARGET = Path(__file__).parents[2] / "docs" / "openapi.json"


def document_text(app: FastAPI) -> str:
    """The document as stored: sorted keys, two-space indents, a final newline."""
    document: dict[str, Any] = app.openapi()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    """Write the document of an app with every route mounted."""
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app = create_app(
        ledger,
        WebSettings(session_secret=b"-" * 64),
        providers=Settings.from_env({}),
    )
    TARGET.write_text(document_text(app), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET}\n")


if __name__ == "__main__":
    main()
