"""``/v1/stats``: the hub's figures: the catalogue's now, and the exchange figures over a date range."""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from collections.abc import Callable, Mapping
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.models import CatalogueStats, StatsOut
from hub.control.errors import Invalid
from hub.control.view import ControlView

# (first day, last day, catalogue entries by tier) -> the ``exchange`` object (hub.stats.figures), None until counted
ExchangeFigures = Callable[[date | None, date | None, Mapping[str, int]], dict[str, Any] | None]


def stats_router(control: ControlView, auth: Authenticator, exchange: ExchangeFigures | None = None) -> APIRouter:
    """``exchange`` (optional) returns the exchange figures (calls, records by direction, ...) for a date range."""
    router = APIRouter(prefix="/v1/stats", tags=["stats"])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]
    From = Annotated[date | None, Query(alias="from", description="first day counted (YYYY-MM-DD, China time)")]
    To = Annotated[date | None, Query(description="last day counted, inclusive (YYYY-MM-DD, China time)")]

    @router.get("")
    async def stats(caller: Caller, first: From = None, to: To = None) -> StatsOut:
        """Catalogue entries by tier, provider and sharing type; under ``exchange``, the figures of docs/domain.md (each
        with its definition) and the counts by action, direction, tier pair, resource, reason and day, over
        ``from``..``to`` (default: every day counted)."""
        if first is not None and to is not None and first > to:
            raise Invalid("invalid_range", f"query from: {first} is after to: {to}")
        counts = control.state.catalogue_counts()
        return StatsOut(
            catalogue=CatalogueStats.of(counts),
            exchange=exchange(first, to, counts.by_tier) if exchange is not None else None,
        )

    return router
