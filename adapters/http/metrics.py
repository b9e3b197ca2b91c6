"""Prometheus metrics for one application: its own registry, so apps never collide."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

LagProbe = Callable[[], float]


class Metrics:
    """Counters for sends, refused sends and webhook events; gauges for outcomes
    recorded by providers and for projection lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sends = Counter(
            "ledger_sends",
            "Send commands, by channel and outcome (accepted or repeated).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.send_failures = Counter(
            "ledger_send_failures",
            "Send and retry commands refused, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.retries = Counter(
            "ledger_retries", "Retries accepted.", registry=self.registry
        )
        self.webhook_events = Counter(
            "ledger_webhook_events",
            "Webhook requests answered, by path and status class.",
            ["path", "status"],
            registry=self.registry,
        )
        self.messages = Gauge(
            "ledger_messages",
            "Messages that reached each stage (sent, delivered, opened, bounced, "
            "failed, replied), across companies, from the reporting view.",
            ["stage"],
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "ledger_projection_lag_events",
            "Events recorded but not yet processed, per projection.",
            ["projection"],
            registry=self.registry,
        )

    def watch_stage(self, stage: str, probe: LagProbe) -> None:
        """Report `probe()` as the number of messages that reached `stage`."""
        self.messages.labels(stage).set_function(probe)

    def watch_lag(self, projection: str, probe: LagProbe) -> None:
        """Report `probe()` as the lag of `projection` whenever metrics are read."""
        self.projection_lag.labels(projection).set_function(probe)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)
