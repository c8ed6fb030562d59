"""``/v1/resources``: the resource catalogue. Providers catalogue their own resources; every change is a version.

``POST /v1/resources`` creates, ``PUT`` replaces (a new version unless equal), ``PATCH`` changes some fields,
``DELETE`` (or ``POST .../retire``) retires, ``GET .../versions`` gives the history, ``POST
/v1/resources/import`` takes many entries and reports on each.
"""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.api.models import ImportReport, ImportRequest, ResourceChange, ResourceOut
from hub.catalogue.model import Sharing, Tier
from hub.control.errors import NotFound
from hub.control.operations import ResourcePatch, ResourceSpec, current_entry, filter_entries
from hub.control.service import ControlService


def resources_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/resources", tags=["catalogue"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]

    @router.get("")
    async def list_resources(
        caller: Caller,
        tier: Tier | None = None,
        provider: Annotated[str | None, Query(max_length=200, description="provider node id")] = None,
        sharing: Sharing | None = None,
        q: Annotated[str | None, Query(max_length=200, description="text in id, title or description")] = None,
        retired: Annotated[bool, Query(description="include retired entries")] = False,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[ResourceOut]:
        """Catalogue entries (latest version of each), filtered by tier, provider, sharing type and text."""
        found = filter_entries(control.state.entries(retired=retired), tier=tier, provider=provider,
                               sharing=sharing, text=q)
        page = found[offset:] if limit is None else found[offset:offset + limit]
        return [ResourceOut.of(e) for e in page]

    @router.post("", status_code=201)
    async def create_resource(spec: ResourceSpec, caller: Caller) -> ResourceOut:
        """Catalogue a resource (its provider, or the operator). Its schema subject must exist in the registry and
        hold every field the entry names."""
        return ResourceOut.of(await control.create_resource(spec, caller.node_id))

    @router.post("/import")
    async def import_resources(body: ImportRequest, caller: Caller) -> ImportReport:
        """Create, update or leave each entry, one report line each; re-importing the same entries changes nothing."""
        return ImportReport.of(await control.import_resources(body.resources, caller.node_id))

    @router.get("/{resource_id}")
    async def show_resource(resource_id: str, caller: Caller) -> ResourceOut:
        """The latest version of one entry (retired ones too, flagged)."""
        return ResourceOut.of(current_entry(control.state, resource_id))

    @router.get("/{resource_id}/versions")
    async def resource_versions(resource_id: str, caller: Caller) -> list[ResourceOut]:
        """Every version of one entry, oldest first."""
        current_entry(control.state, resource_id)
        return [ResourceOut.of(e) for e in control.state.history(resource_id)]

    @router.get("/{resource_id}/versions/{version}")
    async def resource_version(resource_id: str, version: int, caller: Caller) -> ResourceOut:
        """One version of one entry."""
        current_entry(control.state, resource_id)
        entry = control.state.catalog.get(resource_id, {}).get(version)
        if entry is None:
            raise NotFound("unknown_version", f"resource {resource_id} has no version {version}")
        return ResourceOut.of(entry)

    @router.put("/{resource_id}")
    async def replace_resource(resource_id: str, spec: ResourceSpec, caller: Caller) -> ResourceChange:
        """Replace an entry: a new version, unless the spec equals the current version (``changed`` false)."""
        entry, changed = await control.update_resource(resource_id, spec, caller.node_id)
        return ResourceChange(**ResourceOut.of(entry).model_dump(), changed=changed)

    @router.patch("/{resource_id}")
    async def patch_resource(resource_id: str, patch: ResourcePatch, caller: Caller) -> ResourceChange:
        """Change some fields of an entry: a new version, unless nothing changes (``changed`` false)."""
        entry, changed = await control.patch_resource(resource_id, patch, caller.node_id)
        return ResourceChange(**ResourceOut.of(entry).model_dump(), changed=changed)

    @router.delete("/{resource_id}")
    async def retire_resource(resource_id: str, caller: Caller) -> ResourceOut:
        """Retire an entry (its provider, or the operator): a last version with ``retired`` true."""
        return ResourceOut.of(await control.retire_resource(resource_id, caller.node_id))

    @router.post("/{resource_id}/retire")
    async def retire_resource_post(resource_id: str, caller: Caller) -> ResourceOut:
        """Same as ``DELETE /v1/resources/{id}``."""
        return ResourceOut.of(await control.retire_resource(resource_id, caller.node_id))

    return router
