"""``/v1/stats``: the hub's figures. The catalogue's now; the exchange figures plug in as ``exchange``."""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.models import CatalogueStats, StatsOut
from hub.control.view import ControlView

ExchangeFigures = Callable[[], dict[str, Any] | None]


def stats_router(control: ControlView, auth: Authenticator, exchange: ExchangeFigures | None = None) -> APIRouter:
    """``exchange`` (optional) returns the live exchange figures (calls, records by direction, ...)."""
    router = APIRouter(prefix="/v1/stats", tags=["stats"])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]

    @router.get("")
    async def stats(caller: Caller) -> StatsOut:
        """Catalogue entries by tier, provider and sharing type (+ the exchange figures once counted)."""
        return StatsOut(
            catalogue=CatalogueStats.of(control.state.catalogue_counts()),
            exchange=exchange() if exchange is not None else None,
        )

    return router
