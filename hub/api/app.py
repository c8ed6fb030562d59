"""The hub's one HTTP service: the Confluent-compatible registry, the /v1 control plane, health and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hub.api.auth import Authenticator, FailureLimiter
from hub.api.errors import error_response, install_api_error_handlers
from hub.api.grants import grants_router
from hub.api.nodes import nodes_router
from hub.api.objections import objections_router
from hub.api.resources import resources_router
from hub.api.scenarios import scenarios_router
from hub.api.stats import ExchangeFigures, stats_router
from hub.audit.control_log import AuditSink
from hub.control.service import ControlService
from hub.registry.negotiation import V1, choose
from hub.registry.routes import is_registry_request, registry_router
from hub.registry.service import RegistryService

MAX_BODY_BYTES = 32 * 1024 * 1024


def create_api(
    registry_service: RegistryService, metrics_registry: CollectorRegistry, *,
    control: ControlService | None = None, operator_token: str | None = None,
    exchange_figures: ExchangeFigures | None = None, control_audit: AuditSink | None = None,
) -> FastAPI:
    """Compose the service; the caller owns the registry and control services' start/stop.

    With ``control`` (and the ``operator_token``) the ``/v1`` control plane is served and registry writes need
    a token (see ``hub.api.auth``); without it, only the registry, ``/healthz`` and ``/metrics``.
    ``control_audit`` receives failed authentications and 403 refusals (``hub.audit.control_log``; control
    changes reach it through ``control.change_listener``).
    """
    app = FastAPI(
        title="Public-data exchange hub",
        version="0.1.0",
        description="Confluent-compatible schema registry and the hub's control plane. Every /v1 call needs "
        "'Authorization: Bearer <token>' or HTTP Basic (node id, token).",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    install_api_error_handlers(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Refuse an announced /v1 body above MAX_BODY_BYTES before reading it (the registry checks its own)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES and not is_registry_request(request):
            return error_response(413, "too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes; "
                                  "send fewer entries per request")
        return await call_next(request)

    @app.middleware("http")
    async def negotiate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Registry answers in the type the Accept header asks for (``hub.registry.negotiation``), else 406."""
        if not is_registry_request(request):
            return await call_next(request)
        chosen = choose(request.headers.get("accept"))
        if chosen is None:
            return JSONResponse({"error_code": 406, "message": "HTTP 406 Not Acceptable"}, status_code=406,
                                media_type=V1)
        response = await call_next(request)
        content_type = response.headers.get("content-type", "")
        if chosen != V1 and (content_type.startswith(V1) or content_type.startswith("application/json")):
            response.headers["content-type"] = chosen
        return response

    if control is not None:
        limiter = FailureLimiter(control.settings.auth_failure_limit, control.settings.auth_failure_window)
        auth = Authenticator(control, operator_token or "", audit=control_audit, limiter=limiter)
        app.state.on_forbidden = auth.on_forbidden
        guard = auth.registry_write_guard(registry_service)
        app.include_router(registry_router(registry_service, authorize_write=guard))
        app.include_router(nodes_router(control, auth))
        app.include_router(scenarios_router(control, auth))
        app.include_router(resources_router(control, auth))
        app.include_router(grants_router(control, auth))
        app.include_router(objections_router(control, auth))
        app.include_router(stats_router(control, auth, exchange_figures))
    else:
        app.include_router(registry_router(registry_service))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness and readiness: 200 once the registry (and the control plane) have loaded their topics."""
        ready = registry_service.ready and (control is None or control.ready)
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
