"""The FastAPI application: the JSON API, the staff pages, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from adapters.http import api, pages
from adapters.http.auth import Services, company_principal, current_principal
from adapters.http.errors import (
    ERROR_RESPONSES,
    ErrorBody,
    error_response,
    install_error_handlers,
)
from adapters.http.metrics import Metrics
from adapters.http.reading import (
    ReportReader,
    StatusReader,
    ThreadReader,
    TimelineReader,
    read_report,
    read_threads,
    read_timeline,
)
from adapters.http.schemas import Health
from adapters.http.sending import SendGroup, lifespan_of
from adapters.http.settings import WebSettings
from adapters.http.unsubscribe import link_path, unsubscribe_router
from adapters.webhooks import import_router, provider_router
from adapters.wiring import Settings
from commands.application import Ledger

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/webhooks"
DESCRIPTION = (
    "Every email and SMS a company exchanges with its customers. Authenticate "
    "with `Authorization: Bearer <token>` (tokens come from `ledger tokens issue`) "
    "or a staff session from `/login`. Errors answer `{error: {code, message, "
    "field}}`; another company's records answer 404."
)


def create_app(
    ledger: Ledger,
    settings: WebSettings,
    *,
    timeline: TimelineReader = read_timeline,
    reports: ReportReader | None = None,
    threads: ThreadReader = read_threads,
    status: StatusReader = read_report,
    providers: Settings | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The HTTP application over `ledger`.

    `timeline`, `threads` and `status` serve customer timelines, threads and
    the status report; the defaults scan the event store, and
    `ProjectionReads` (projected.py) has readers of the projections for them.
    Delivery reports are answered by `reports`, which needs the projections;
    without it their route answers 503.

    Sends made through the API while the app runs share transactions with
    concurrent ones (adapters/http/sending.py).

    With `providers` (the ledger's settings), the provider webhooks, the
    inbound-email hook, the open pixel, the one-click unsubscribe links and the
    .eml import are mounted too.
    """
    sends = SendGroup(ledger)
    app = FastAPI(
        title="Message ledger",
        version="1.0.0",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan_of(sends),
    )
    found_metrics = metrics or Metrics()
    app.state.services = Services(
        ledger, settings, found_metrics, sends, timeline, reports, threads, status
    )
    install_error_handlers(app, pages.error_page)
    app.include_router(operations_router(ledger, found_metrics))
    app.include_router(api.router)
    if providers is not None:
        mount_providers(app, ledger, providers)
    app.include_router(pages.router)
    app.mount(
        "/static",
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="static",
    )
    app.middleware("http")(count_webhooks(found_metrics))
    return app


def mount_providers(app: FastAPI, ledger: Ledger, settings: Settings) -> None:
    """The routes the providers and mail recipients call, and the .eml import.

    That is the provider webhooks, the one-click unsubscribe links of marketing
    email, and the import of .eml files by API users.
    """
    secret = settings.reply_secret.encode() if settings.reply_secret else None
    hooks = provider_router(
        ledger, reply_secret=secret, twilio_auth_token=settings.sms_auth_token
    )
    document_media_types(hooks)
    app.include_router(
        hooks,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    app.include_router(
        unsubscribe_router(ledger, secret, link_path(settings.unsubscribe_url)),
        responses={422: {"model": ErrorBody}},
    )
    app.include_router(
        import_router(ledger, current_principal, secret),
        prefix="/api/{company}",
        dependencies=[Depends(company_principal)],
        responses=ERROR_RESPONSES,
    )


NON_JSON_ANSWERS = {".gif": "image/gif", "/twilio/sms": "text/xml"}


def document_media_types(router: APIRouter) -> None:
    """Say in the OpenAPI document which provider routes answer other than JSON."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for ending, media_type in NON_JSON_ANSWERS.items():
            if route.path.endswith(ending):
                route.response_class = Response
                route.responses = {
                    200: {"content": {media_type: {}}, "description": "Accepted"}
                }


def operations_router(ledger: Ledger, metrics: Metrics) -> APIRouter:
    """Liveness, readiness and Prometheus metrics; no credentials needed."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=Health)
    def health() -> Health:
        """The process is up."""
        return Health(status="ok")

    @router.get("/ready", response_model=Health, responses={503: ERROR_RESPONSES[503]})
    def ready() -> Response:
        """The event store answers, so requests can be served."""
        try:
            ledger.recorder.max_notification_id()
        except Exception as exc:
            logger.warning("readiness check failed: %s", exc)
            return error_response(
                503, "not_ready", "The event store does not answer; check it."
            )
        return Response(
            Health(status="ready").model_dump_json(), media_type="application/json"
        )

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def prometheus() -> Response:
        """Counters and gauges in the Prometheus text format."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return router


Handler = Callable[[Request], Awaitable[Response]]


def count_webhooks(
    metrics: Metrics,
) -> Callable[[Request, Handler], Awaitable[Response]]:
    """A middleware counting answers to webhook requests, by path and status."""

    async def middleware(request: Request, call_next: Handler) -> Response:
        """Count the answer if the request was a webhook's."""
        response = await call_next(request)
        if request.url.path.startswith(WEBHOOK_PREFIX):
            # The route's template, not the path, so tenants add no label values.
            route = request.scope.get("route")
            path = getattr(route, "path", WEBHOOK_PREFIX)
            status = f"{response.status_code // 100}xx"
            metrics.webhook_events.labels(path, status).inc()
        return response

    return middleware
