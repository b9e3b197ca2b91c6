"""The HTTP surface: the JSON API and the staff's Messages tab."""

from __future__ import annotations

from adapters.http.app import create_app
from adapters.http.settings import WebSettings

__all__ = ["WebSettings", "create_app"]
