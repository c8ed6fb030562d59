"""``/v1/scenarios``: the named purposes grants are bound to, each with its legal basis (operator-managed)."""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from typing import Annotated

from fastapi import APIRouter, Depends

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.api.models import ScenarioOut
from hub.control.errors import NotFound
from hub.control.operations import ScenarioPatch, ScenarioSpec
from hub.control.service import ControlService


def scenarios_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/scenarios", tags=["scenarios"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]

    @router.get("")
    async def list_scenarios(caller: Caller) -> list[ScenarioOut]:
        """Every registered scenario."""
        return [ScenarioOut.of(control.state.scenarios[k]) for k in sorted(control.state.scenarios)]

    @router.post("", status_code=201)
    async def create_scenario(spec: ScenarioSpec, caller: Caller) -> ScenarioOut:
        """Register a scenario (operator only)."""
        return ScenarioOut.of(await control.create_scenario(spec, caller.node_id))

    @router.get("/{scenario_id}")
    async def show_scenario(scenario_id: str, caller: Caller) -> ScenarioOut:
        """One scenario."""
        entry = control.state.scenarios.get(scenario_id)
        if entry is None:
            raise NotFound("unknown_scenario", f"no scenario {scenario_id!r} (GET /v1/scenarios lists them)")
        return ScenarioOut.of(entry)

    @router.patch("/{scenario_id}")
    async def update_scenario(scenario_id: str, patch: ScenarioPatch, caller: Caller) -> ScenarioOut:
        """Change a scenario's title, legal basis or description (operator only): a new version."""
        return ScenarioOut.of(await control.update_scenario(scenario_id, patch, caller.node_id))

    return router
