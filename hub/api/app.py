"""The hub's one HTTP service: the Confluent-compatible registry, the /v1 control plane, health and metrics."""

from __future__ import annotations

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hub.registry.routes import install_registry_error_handlers, registry_router
from hub.registry.service import RegistryService


def create_api(registry_service: RegistryService, metrics_registry: CollectorRegistry) -> FastAPI:
    """Compose the service; the caller owns the registry service's start/stop."""
    app = FastAPI(
        title="Public-data exchange hub",
        version="0.1.0",
        description="Confluent-compatible schema registry and the hub's control plane.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    install_registry_error_handlers(app)
    app.include_router(registry_router(registry_service))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness and readiness: 200 once the registry has loaded its topic."""
        ready = registry_service.ready
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
